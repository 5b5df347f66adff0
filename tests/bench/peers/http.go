// Go net/http on a Unix socket, the JSON greeting.
package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
)

func main() {
	path := os.Args[1]
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		panic(err)
	}
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"message": "Hello from your HTTP server on a Unix socket!", "url": r.URL.RequestURI()})
	}))
}
