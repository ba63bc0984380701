// Command argocd-health prints Argo CD's health verdict for each object read from stdin, computed
// by the same code as `argocd admin settings resource-overrides health OBJ --argocd-cm-path CM`:
// the argocd-cm is loaded through Argo CD's settings manager (over a fake clientset, as that
// command does offline) and each object goes through gitops-engine's GetResourceHealth with Argo
// CD's Lua overrides (gopher-lua with Argo's sandbox). Unlike that command it judges many objects
// per process start.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	healthutil "github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"kubeslim.local/gitops-judges/internal/judge"
)

// resourceOverrides reads argocd-cm as the argocd CLI's offline mode does (createSettingsManager in
// cmd/argocd/commands/admin/settings.go): namespace "default", the part-of label the settings
// informers select on, and a placeholder argocd-secret.
func resourceOverrides(ctx context.Context, cmPath string) (map[string]v1alpha1.ResourceOverride, error) {
	data, err := os.ReadFile(cmPath)
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", cmPath, err)
	}
	if cm.Name != common.ArgoCDConfigMapName {
		return nil, fmt.Errorf("%s: metadata.name is %q; Argo CD reads only %q", cmPath, cm.Name, common.ArgoCDConfigMapName)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: common.ArgoCDSecretName},
		Data:       map[string][]byte{"admin.password": []byte("test"), "server.secretkey": []byte("test")},
	}
	for _, obj := range []metav1.Object{&cm, secret} {
		obj.SetNamespace("default")
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels["app.kubernetes.io/part-of"] = "argocd"
		obj.SetLabels(labels)
	}
	manager := settings.NewSettingsManager(ctx, fake.NewClientset(secret, &cm), "default")
	if err := manager.ResyncInformers(); err != nil {
		return nil, err
	}
	return manager.GetResourceOverrides()
}

func main() {
	cmPath := flag.String("argocd-cm-path", "", "argocd-cm ConfigMap (YAML or JSON) with the resource.customizations.health.* scripts")
	flag.Parse()
	if *cmPath == "" {
		fmt.Fprintln(os.Stderr, "usage: argocd-health --argocd-cm-path CM.yaml < objects.json")
		os.Exit(2)
	}
	overrides, err := resourceOverrides(context.Background(), *cmPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
	err = judge.Serve(os.Stdin, os.Stdout, func(obj *unstructured.Unstructured) (judge.Verdict, error) {
		h, err := healthutil.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
		if err != nil {
			return judge.Verdict{}, err
		}
		if h == nil {
			gvk := obj.GroupVersionKind()
			return judge.Verdict{}, fmt.Errorf("health script is not configured for '%s/%s'", gvk.Group, gvk.Kind)
		}
		return judge.Verdict{Status: string(h.Status), Message: h.Message}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}
