//go:build race

package bench

// raceEnabled is set under the race detector, which makes sync.Pool drop
// what is put in it at random: allocation counts mean nothing then.
const raceEnabled = true
