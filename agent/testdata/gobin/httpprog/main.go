// Test program for the net/http probes' view of a Go binary (agent/src/runtime/gobin
// tests): it links net/http's server and client, and reports what the kernel side
// relies on at run time.
//
// It serves one request to itself over loopback (so (*conn).serve and
// (*persistConn).roundTrip run), then prints, for each net.Conn implementation the
// probes look through, the first method of its net.Conn itab:
//
//	itab <type> <function name at fun[0]> <fun[0] as hex> <fun[0] is a function entry>
//
// With the argument "wait" it then blocks until stdin is closed.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"unsafe"
)

// fun0 returns the first entry of the method table of c's itab: an itab is
// {inter, _type, hash uint32 (+ padding), fun [...]uintptr}, fun at offset 24.
func fun0(c net.Conn) uintptr {
	itab := *(*uintptr)(unsafe.Pointer(&c))
	return *(*uintptr)(unsafe.Pointer(itab + 24))
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("response %s\n", body)

	for _, c := range []struct {
		name string
		conn net.Conn
	}{
		{"*net.TCPConn", &net.TCPConn{}},
		{"*net.UnixConn", &net.UnixConn{}},
		{"*crypto/tls.Conn", &tls.Conn{}},
	} {
		pc := fun0(c.conn)
		f := runtime.FuncForPC(pc)
		fmt.Printf("itab %s %s %#x %v\n", c.name, f.Name(), pc, f.Entry() == pc)
	}
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		fmt.Println("waiting")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
}
