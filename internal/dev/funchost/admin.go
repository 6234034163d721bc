package funchost

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxPublishBytes bounds one publish request.
const maxPublishBytes = 256 << 20

// HostStatus is GET /admin/host/status.
type HostStatus struct {
	State      string `json:"state"`
	HandlerPID int    `json:"handler_pid"`
	Restarts   int    `json:"restarts"`
}

// routes returns the host's HTTP handler: the admin API under /admin/, the app's HTTP functions
// everywhere else.
func (h *Host) routes() http.Handler {
	admin := http.NewServeMux()
	// The handler's local publisher (internal/bus) and tests send messages here.
	admin.HandleFunc("POST /admin/servicebus/{entity}/messages", h.handlePublish)
	// Tests and developers inspect queues, topics and subscriptions.
	admin.HandleFunc("GET /admin/servicebus/{entity}/messages", h.handleInspect)
	admin.HandleFunc("GET /admin/servicebus/{topic}/subscriptions/{sub}/messages", h.handleInspect)
	// Health of the host and its handler process.
	admin.HandleFunc("GET /admin/host/status", h.handleStatus)
	// Recent invocations, optionally ?function=<name>.
	admin.HandleFunc("GET /admin/invocations", h.handleInvocations)
	// Run a non-HTTP function on demand, as Azure's POST /admin/functions/<name> (master key) does.
	admin.HandleFunc("POST /admin/functions/{name}", h.handleInvoke)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/admin/") {
			admin.ServeHTTP(w, r)
			return
		}
		h.front.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func (h *Host) handlePublish(w http.ResponseWriter, r *http.Request) {
	var msgs []PublishMessage
	dec := json.NewDecoder(io.LimitReader(r.Body, maxPublishBytes))
	if err := dec.Decode(&msgs); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("want a JSON array of messages: %w", err))
		return
	}
	res, err := h.Publish(r.PathValue("entity"), msgs)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (h *Host) handleInspect(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("entity")
	if topic := r.PathValue("topic"); topic != "" {
		name = topic + "/subscriptions/" + r.PathValue("sub")
	}
	msgs, ok := h.Messages(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no entity %s", name))
		return
	}
	writeJSON(w, http.StatusOK, msgs)
}

func (h *Host) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.Status())
}

func (h *Host) handleInvocations(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.Invocations(r.URL.Query().Get("function")))
}

func (h *Host) handleInvoke(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Input string `json:"input"`
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxPublishBytes))
	if err == nil && len(strings.TrimSpace(string(data))) > 0 {
		err = json.Unmarshal(data, &body)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("want {\"input\":\"...\"}: %w", err))
		return
	}
	err = h.Invoke(r.PathValue("name"), body.Input)
	switch {
	case errors.Is(err, ErrNoFunction):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusBadRequest, err)
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}
