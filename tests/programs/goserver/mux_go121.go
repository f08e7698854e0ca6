//go:build !go1.22

package main

import (
	"net/http"
	"strings"
)

// registerUsers emulates "GET /users/{id}" (Go 1.22 pattern) with a prefix
// handler and gives the same answers as the 1.22 mux does next to the "/"
// catch-all: 200 for GET and HEAD; 404 for other methods (they fall through
// to "/") and for an empty or multi-segment id.
func registerUsers(mux *http.ServeMux) {
	mux.HandleFunc("/users/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/users/")
		if id == "" || strings.Contains(id, "/") ||
			(r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		user(w, id)
	})
}
