package units

import "strconv"

// Count writes n with the noun in the number it takes: "1 mistake",
// "2 mistakes", "0 mistakes". An operator reads "1 mistakes" as sloppiness,
// and sloppiness in one place casts doubt on the rest.
func Count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
