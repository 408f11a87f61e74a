package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) error {
	writeBody(w, r, cacheInfoType, s.cacheInfo)
	return nil
}

// serveNarInfo answers /<hash>.narinfo. A hit costs a map lookup and a
// write; only a miss attaches the request id and asks the upstreams.
func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request) error {
	hash, ok := strings.CutSuffix(r.URL.Path[1:], ".narinfo")
	if !ok || !narinfo.ValidHash(hash) {
		return errBadName
	}
	text, err := s.cache.StoredNarInfo(r.Context(), hash)
	if errors.Is(err, cache.ErrNotFound) {
		r = withRequestID(w, r)
		text, err = s.cache.NarInfo(r.Context(), hash)
	}
	if err != nil {
		return err
	}
	writeBody(w, r, narInfoType, text)
	return nil
}

// serveTopLevel answers the other /<file> names: /<hash>.ls, and the
// narinfo names the fast path in ServeHTTP did not take (malformed ones).
func (s *Server) serveTopLevel(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if strings.HasSuffix(file, ".narinfo") {
		return errBadName
	}
	if hash, ok := strings.CutSuffix(file, ".ls"); ok && r.Method == http.MethodGet {
		setRoute(w, "ls")
		if !narinfo.ValidHash(hash) {
			return errBadName
		}
		return s.serveAux(w, r, file, listingType)
	}
	setRoute(w, "other")
	return cache.ErrNotFound
}

func (s *Server) serveNAR(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if !narinfo.ValidNARName(file) {
		return errBadName
	}
	return s.cache.ServeNAR(w, withRequestID(w, r), file)
}

func (s *Server) serveFill(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if !narinfo.ValidNARName(file) {
		return errBadName
	}
	return s.cache.ServeFill(w, withRequestID(w, r), file)
}

func (s *Server) serveLog(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	if !narinfo.ValidStorePathName(name) {
		return errBadName
	}
	return s.serveAux(w, r, "log/"+name, logType)
}

func (s *Server) serveRealisation(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if !validRealisationName(file) {
		return errBadName
	}
	return s.serveAux(w, r, "realisations/"+file, listingType)
}

func (s *Server) serveBuildTrace(w http.ResponseWriter, r *http.Request) error {
	drv, file := chi.URLParam(r, "drv"), chi.URLParam(r, "file")
	if !narinfo.ValidStorePathName(drv) || !validRealisationName(file) {
		return errBadName
	}
	return s.serveAux(w, r, "build-trace-v2/"+drv+"/"+file, listingType)
}

func (s *Server) serveAux(w http.ResponseWriter, r *http.Request, key string, contentType []string) error {
	body, err := s.cache.Aux(withRequestID(w, r).Context(), key)
	if err != nil {
		return err
	}
	writeBody(w, r, contentType, body)
	return nil
}

// Header values shared by every response: net/http only reads them, so
// assigning them costs no allocation, unlike Header.Set.
var (
	narInfoType   = []string{"text/x-nix-narinfo"}
	cacheInfoType = []string{"text/x-nix-cache-info"}
	listingType   = []string{"application/json"}
	logType       = []string{"text/plain; charset=utf-8"}
)

func writeBody(w http.ResponseWriter, r *http.Request, contentType []string, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Date"] = httpDate()
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
