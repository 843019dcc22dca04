//go:build race

package nodesim

// raceEnabled trims the default seed counts under -race: a simulation is
// single-threaded (the detector slows it ~4x and has little to find), and
// CI runs every test with it.
const raceEnabled = true
