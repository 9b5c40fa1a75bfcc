package load

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go supports.
const userHZ = 100

// cpuSeconds returns the user+system CPU time the processes used so far.
func cpuSeconds(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		f, err := statFields(pid)
		if err != nil {
			return 0, err
		}
		// Fields after the command: state is 3, utime 14, stime 15 (proc(5)).
		for _, i := range []int{14, 15} {
			n, err := strconv.ParseInt(f[i-3], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cannot parse /proc/%d/stat: %w", pid, err)
			}
			ticks += n
		}
	}
	return float64(ticks) / userHZ, nil
}

// statFields returns /proc/<pid>/stat's fields from state on: the command
// before them is in parentheses and may hold spaces.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("cannot read a process's CPU time: %w", err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("cannot parse /proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("cannot parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// memory returns the processes' summed resident set now (VmRSS) and at its
// peak (VmHWM), in bytes.
func memory(pids []int) (rss, peak int64, err error) {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, 0, fmt.Errorf("cannot read a process's memory: %w", err)
		}
		r, err := statusKiB(b, "VmRSS:")
		if err != nil {
			return 0, 0, fmt.Errorf("cannot parse /proc/%d/status: %w", pid, err)
		}
		p, err := statusKiB(b, "VmHWM:")
		if err != nil {
			return 0, 0, fmt.Errorf("cannot parse /proc/%d/status: %w", pid, err)
		}
		rss += r
		peak += p
	}
	return rss, peak, nil
}

// statusKiB returns the value of a "Name:   123 kB" line in bytes.
func statusKiB(status []byte, name string) (int64, error) {
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, name); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s %w", name, err)
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s line", name)
}

// children returns the processes whose parent is pid, e.g. nginx's workers.
func children(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("cannot list processes: %w", err)
	}
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		f, err := statFields(child)
		if err != nil {
			continue // exited since the listing
		}
		if f[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids, nil
}
