// Test program for agent/src/runtime/gobin: a known function name, a `go`
// statement at a known line, and a struct whose layout must not matter.
// Line numbers below are asserted by the tests; append, don't insert.
package main

import (
	"fmt"
	"os"
	"sync"
)

//go:noinline
func periscopeWorker(n int, wg *sync.WaitGroup, out chan<- int) {
	defer wg.Done()
	s := 0
	for i := 0; i < n; i++ {
		s += i * i
	}
	out <- s
}

func main() {
	var wg sync.WaitGroup
	out := make(chan int, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go periscopeWorker(1000*(i+1), &wg, out)
	}
	wg.Wait()
	close(out)
	total := 0
	for v := range out {
		total += v
	}
	fmt.Fprintln(os.Stdout, "periscope-gobin-testprog", total)
}
