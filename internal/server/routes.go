package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) error {
	writeBody(w, r, "text/x-nix-cache-info", s.cacheInfo)
	return nil
}

// serveTopLevel answers /<hash>.narinfo and /<hash>.ls.
func (s *Server) serveTopLevel(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if hash, ok := strings.CutSuffix(file, ".narinfo"); ok {
		if !narinfo.ValidHash(hash) {
			return errBadName
		}
		text, err := s.cache.NarInfo(r.Context(), hash)
		if err != nil {
			return err
		}
		writeBody(w, r, "text/x-nix-narinfo", text)
		return nil
	}
	if hash, ok := strings.CutSuffix(file, ".ls"); ok && r.Method == http.MethodGet {
		setRoute(w, "ls")
		if !narinfo.ValidHash(hash) {
			return errBadName
		}
		return s.serveAux(w, r, file, "application/json")
	}
	setRoute(w, "other")
	return cache.ErrNotFound
}

func (s *Server) serveNAR(w http.ResponseWriter, r *http.Request) error {
	file := chi.URLParam(r, "file")
	if !narinfo.ValidNARName(file) {
		return errBadName
	}
	return s.cache.ServeNAR(w, r, file)
}

func (s *Server) serveLog(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	if !narinfo.ValidStorePathName(name) {
		return errBadName
	}
	return s.serveAux(w, r, "log/"+name, "text/plain; charset=utf-8")
}

func (s *Server) serveAux(w http.ResponseWriter, r *http.Request, key, contentType string) error {
	body, err := s.cache.Aux(r.Context(), key)
	if err != nil {
		return err
	}
	writeBody(w, r, contentType, body)
	return nil
}

func writeBody(w http.ResponseWriter, r *http.Request, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
