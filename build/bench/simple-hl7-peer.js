// The peer of hl7edge's BenchmarkVersusPeer (cmd/hl7edge): simple-hl7's MLLP
// server, which parses each message and answers the ACK it builds, keeping
// nothing. `make bench` installs simple-hl7 into a scratch directory.
const hl7 = require('simple-hl7');
const port = parseInt(process.argv[2], 10);
const app = hl7.tcp();
app.use(function (req, res, next) { next(); });
app.use(function (req, res) { res.end(); });
app.start(port);
console.log('listening ' + port);
