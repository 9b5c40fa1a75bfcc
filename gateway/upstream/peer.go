package upstream

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// What the gateway can see of a peer's connection without reading from it:
// poll(2) reports a FIN (POLLRDHUP) even behind unread bytes, such as a
// pipelined request or a TLS close_notify.

// hungUp reports whether the peer of the socket fd has closed or reset the
// connection. A caller that only half-closed its side counts as gone, as it
// does for nginx.
func hungUp(fd int) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds[:], 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// socketFD returns the descriptor of the socket under c, through TLS and
// the gateway's own wrappers, or -1. The descriptor stays c's only while c
// is open: a closed one may be reused by the next socket.
func socketFD(c net.Conn) int {
	for {
		switch x := c.(type) {
		case syscall.Conn:
			rc, err := x.SyscallConn()
			if err != nil {
				return -1
			}
			fd := -1
			if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
				return -1
			}
			return fd
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return -1
		}
	}
}
