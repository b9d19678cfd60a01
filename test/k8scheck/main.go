// Command k8scheck validates Kubernetes manifests against the Kubernetes API
// types (k8s.io/api): every document must decode strictly (no unknown or
// misspelled field, the right value types) into the type its apiVersion and
// kind name, and the objects must fit together: the Deployment's selector
// matches its pod labels, the Service and the PodDisruptionBudget select
// those pods, probes and Service target ports name container ports, the
// ConfigMap and Secret references are to objects in the file or listed with
// -external. It prints one line per object and exits 1 on the first problem.
//
//	go run . [-external secret/NAME,...] [-dump DIR] FILE...
//
// It is its own module (test/k8scheck/go.mod) so that pgsplit does not
// depend on the Kubernetes libraries.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func main() {
	external := flag.String("external", "", "objects the manifests may reference that are not in them: kind/name,... (e.g. secret/pgsplit-auth)")
	dump := flag.String("dump", "", "write each ConfigMap key to DIR/<configmap>/<key> (for checking what they hold)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck [-external kind/name,...] FILE...")
		os.Exit(2)
	}
	var docs [][]byte
	for _, f := range flag.Args() {
		b, err := os.ReadFile(f)
		if err != nil {
			fail(err)
		}
		docs = append(docs, splitDocs(b)...)
	}
	objs, err := decodeAll(docs)
	if err != nil {
		fail(err)
	}
	ext := map[string]bool{}
	for _, e := range strings.Split(*external, ",") {
		if e != "" {
			ext[strings.ToLower(e)] = true
		}
	}
	if err := check(objs, ext, os.Stdout); err != nil {
		fail(err)
	}
	if *dump != "" {
		for name, cm := range objs.configMaps {
			dir := filepath.Join(*dump, name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				fail(err)
			}
			for k, v := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
					fail(err)
				}
			}
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "k8scheck:", err)
	os.Exit(1)
}

// splitDocs splits a YAML stream at its "---" lines, dropping empty
// documents (comments only).
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		empty := true
		for _, l := range strings.Split(string(d), "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, d)
		}
	}
	return out
}

type objects struct {
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	count       int
}

// decodeAll decodes each document strictly into the type of its kind.
func decodeAll(docs [][]byte) (*objects, error) {
	o := &objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for i, d := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(d, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		var target any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ConfigMap":
			target = &corev1.ConfigMap{}
		case "v1 Secret":
			target = &corev1.Secret{}
		case "v1 Service":
			target = &corev1.Service{}
		case "apps/v1 Deployment":
			target = &appsv1.Deployment{}
		case "policy/v1 PodDisruptionBudget":
			target = &policyv1.PodDisruptionBudget{}
		default:
			return nil, fmt.Errorf("document %d: apiVersion %q kind %q is not one this check knows", i+1, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(d, target); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, tm.Kind, err)
		}
		o.count++
		switch v := target.(type) {
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
		case *corev1.Secret:
			o.secrets[v.Name] = v
		case *corev1.Service:
			o.services = append(o.services, v)
		case *appsv1.Deployment:
			o.deployments = append(o.deployments, v)
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		}
	}
	return o, nil
}

// check tests how the objects fit together.
func check(o *objects, ext map[string]bool, w io.Writer) error {
	if len(o.deployments) == 0 {
		return errors.New("no Deployment")
	}
	for _, d := range o.deployments {
		if err := checkDeployment(d, o, ext); err != nil {
			return fmt.Errorf("Deployment %s: %w", d.Name, err)
		}
		fmt.Fprintf(w, "ok Deployment %s (%d replicas, readiness %s)\n", d.Name, replicas(d), readiness(d))
	}
	for _, s := range o.services {
		d, err := selected(s.Spec.Selector, o.deployments)
		if err != nil {
			return fmt.Errorf("Service %s: %w", s.Name, err)
		}
		for _, p := range s.Spec.Ports {
			if !hasPort(d, p.TargetPort) {
				return fmt.Errorf("Service %s: port %s targets %s, which no container of Deployment %s declares", s.Name, p.Name, p.TargetPort.String(), d.Name)
			}
		}
		fmt.Fprintf(w, "ok Service %s -> Deployment %s\n", s.Name, d.Name)
	}
	for _, p := range o.pdbs {
		if p.Spec.Selector == nil {
			return fmt.Errorf("PodDisruptionBudget %s: no selector", p.Name)
		}
		d, err := selected(p.Spec.Selector.MatchLabels, o.deployments)
		if err != nil {
			return fmt.Errorf("PodDisruptionBudget %s: %w", p.Name, err)
		}
		if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.Type == intstr.Int && int32(p.Spec.MinAvailable.IntValue()) >= replicas(d) {
			return fmt.Errorf("PodDisruptionBudget %s: minAvailable %d leaves no pod of %d evictable", p.Name, p.Spec.MinAvailable.IntValue(), replicas(d))
		}
		fmt.Fprintf(w, "ok PodDisruptionBudget %s -> Deployment %s\n", p.Name, d.Name)
	}
	for name := range o.configMaps {
		fmt.Fprintf(w, "ok ConfigMap %s\n", name)
	}
	fmt.Fprintf(w, "%d objects valid\n", o.count)
	return nil
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func readiness(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil {
			return p.HTTPGet.Path + " on " + p.HTTPGet.Port.String()
		}
	}
	return "none"
}

func checkDeployment(d *appsv1.Deployment, o *objects, ext map[string]bool) error {
	if d.Spec.Selector == nil {
		return errors.New("no selector")
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return err
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		return fmt.Errorf("selector %s does not match the pod labels %v", sel, d.Spec.Template.Labels)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) == 0 {
		return errors.New("no container")
	}
	for _, c := range spec.Containers {
		if c.ReadinessProbe == nil {
			return fmt.Errorf("container %s has no readiness probe", c.Name)
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p != nil && p.HTTPGet != nil && !hasPort(d, p.HTTPGet.Port) {
				return fmt.Errorf("container %s: probe port %s is not one it declares", c.Name, p.HTTPGet.Port.String())
			}
		}
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				if err := ref(o, ext, "secret", r.SecretKeyRef.Name); err != nil {
					return fmt.Errorf("env %s: %w", e.Name, err)
				}
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			if err := ref(o, ext, "configmap", v.ConfigMap.Name); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
	}
	return nil
}

// ref checks that kind/name is in the manifests or declared external.
func ref(o *objects, ext map[string]bool, kind, name string) error {
	in := false
	switch kind {
	case "secret":
		_, in = o.secrets[name]
	case "configmap":
		_, in = o.configMaps[name]
	}
	if !in && !ext[kind+"/"+name] {
		return fmt.Errorf("%s %q is neither in the manifests nor declared with -external", kind, name)
	}
	return nil
}

// selected returns the one Deployment whose pods the selector picks.
func selected(sel map[string]string, ds []*appsv1.Deployment) (*appsv1.Deployment, error) {
	if len(sel) == 0 {
		return nil, errors.New("empty selector")
	}
	var found *appsv1.Deployment
	for _, d := range ds {
		if labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels)) {
			if found != nil {
				return nil, fmt.Errorf("selector %v picks the pods of Deployments %s and %s", sel, found.Name, d.Name)
			}
			found = d
		}
	}
	if found == nil {
		return nil, fmt.Errorf("selector %v picks no Deployment's pods", sel)
	}
	return found, nil
}

// hasPort reports whether a container of d declares port (by name or number).
func hasPort(d *appsv1.Deployment, port intstr.IntOrString) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return true
			}
		}
	}
	return false
}
