// Command kstatus prints kstatus's verdict (sigs.k8s.io/cli-utils pkg/kstatus/status.Compute, what
// Flux, kpt and cli-utils wait on) for each object read from stdin: {"status": ..., "message": ...}.
package main

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"kubeslim.local/gitops-judges/internal/judge"
)

func main() {
	err := judge.Serve(os.Stdin, os.Stdout, func(obj *unstructured.Unstructured) (judge.Verdict, error) {
		res, err := status.Compute(obj)
		if err != nil {
			return judge.Verdict{}, err
		}
		return judge.Verdict{Status: res.Status.String(), Message: res.Message}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
