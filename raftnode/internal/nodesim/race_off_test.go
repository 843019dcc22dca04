//go:build !race

package nodesim

// raceEnabled: see race_on_test.go.
const raceEnabled = false
