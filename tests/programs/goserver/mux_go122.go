//go:build go1.22

// go.mod says go 1.21 so that the 1.21 toolchain builds this module; that
// would also select the pre-1.22 ServeMux for newer toolchains, so switch
// the enhanced patterns back on here (only files of this build are read).

//go:debug httpmuxgo121=0

package main

import "net/http"

func registerUsers(mux *http.ServeMux) {
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		user(w, r.PathValue("id"))
	})
}
