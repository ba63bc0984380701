// Package judge is the line protocol both commands speak, so a test session can ask for hundreds
// of verdicts from one process: a stream of JSON objects on stdin, one JSON verdict per line on
// stdout, each line flushed as soon as it is computed (a caller may keep the process open and
// ask one object at a time, or pipe a whole batch).
package judge

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Verdict is one output line. Error is set instead of Status when the object could not be judged;
// the process keeps serving the next object.
type Verdict struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Serve judges every object read from in until EOF. Objects are decoded the way the API machinery
// decodes them (unstructured JSON: integers stay int64, which kstatus's generation checks need).
func Serve(in io.Reader, out io.Writer, judge func(*unstructured.Unstructured) (Verdict, error)) error {
	dec := json.NewDecoder(in)
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return w.Flush()
		} else if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{}
		var v Verdict
		err := obj.UnmarshalJSON(raw)
		if err == nil {
			v, err = judge(obj)
		}
		if err != nil {
			v = Verdict{Error: err.Error()}
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
