//go:build !race

package piee

const raceBuild = false
