// Command go-peer is the controller-runtime peer of the Rust pod-operator, for benchmarks.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(AddToScheme(scheme))
}

func main() {
	var (
		namespaces, metricsAddr, probeAddr, leaderID, leaderNS string
		concurrency, burst                                     int
		qps                                                    float64
		leaderElect, stripManagedFields, trimPods, tuned       bool
		memoryLimit                                            int64
	)
	// --kubeconfig is registered by controller-runtime's config package (ctrl.GetConfig).
	flag.StringVar(&namespaces, "namespace", "", "Comma-separated namespaces to serve; all namespaces when empty.")
	flag.IntVar(&concurrency, "concurrency", 10, "Reconciles running at once (MaxConcurrentReconciles).")
	flag.Float64Var(&qps, "qps", -1, "Client QPS; a negative value disables client-go's client-side rate limiter.")
	flag.IntVar(&burst, "burst", 0, "Client burst; 0 keeps the default.")
	flag.BoolVar(&stripManagedFields, "strip-managed-fields", true, "Drop managedFields from cached objects.")
	flag.BoolVar(&trimPods, "trim-pods", true,
		"Cache only what the reconciler reads of a Pod (the Rust operator's Pod cache does the same).")
	flag.BoolVar(&leaderElect, "leader-elect", true, "Elect a leader on a Lease so that only one replica reconciles.")
	flag.StringVar(&leaderID, "leader-election-id", "go-peer-leader", "Name of the leader election Lease.")
	flag.StringVar(&leaderNS, "leader-election-namespace", "",
		"Namespace of the Lease; in cluster the Pod's namespace, else \"default\", when empty.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", "127.0.0.1:8080", "Address of the metrics endpoint (plain HTTP).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", "127.0.0.1:8081", "Address of /healthz and /readyz.")
	flag.BoolVar(&tuned, "tuned", false,
		"Merge-patch the status, skip short-lived statuses of new Pods, filter Pod updates on what the reconciler reads, "+
			"cache Pods trimmed to what it reads and read them without deep copies, warm up before leadership, set a memory limit.")
	flag.Int64Var(&memoryLimit, "memory-limit", 256<<20,
		"Go runtime soft memory limit in bytes, with --tuned when GOMEMLIMIT is not set; 0 or less: none.")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if tuned {
		if _, set := os.LookupEnv("GOMEMLIMIT"); !set && memoryLimit > 0 {
			debug.SetMemoryLimit(memoryLimit)
		}
		setupLog.Info("tuned mode", "memoryLimit", debug.SetMemoryLimit(-1))
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS = float32(qps)
	if burst > 0 {
		cfg.Burst = burst
	}
	if leaderNS == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		leaderNS = "default" // out of cluster controller-runtime can't guess one
	}

	cacheOpts := cache.Options{}
	for ns := range strings.SplitSeq(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			if cacheOpts.DefaultNamespaces == nil {
				cacheOpts.DefaultNamespaces = map[string]cache.Config{}
			}
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	if stripManagedFields {
		cacheOpts.DefaultTransform = cache.TransformStripManagedFields()
	}
	if trimPods {
		pods := cache.ByObject{Transform: trimPod}
		if tuned {
			// As the Rust operator's cache: the Pod's controller reference and Ready condition
			// only.
			pods.Transform = trimPodTuned
			// The reconciler only reads Pods: cache reads hand out the cached object itself.
			// (Not PodRequests: their status is edited in place before the patch.)
			noCopy := true
			pods.UnsafeDisableDeepCopy = &noCopy
		}
		cacheOpts.ByObject = map[client.Object]cache.ByObject{&corev1.Pod{}: pods}
	}

	leaseDuration, renewDeadline, retryPeriod := 15*time.Second, 10*time.Second, 2*time.Second
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache:  cacheOpts,
		Metrics: metricsserver.Options{
			BindAddress:   metricsAddr,
			SecureServing: false,
			ExtraHandlers: map[string]http.Handler{"/live-heap": http.HandlerFunc(liveHeap)},
		},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderID,
		LeaderElectionNamespace:       leaderNS,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		setupLog.Error(err, "unable to create manager")
		os.Exit(1)
	}

	if err := (&PodRequestReconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder(managerName),
		Tuned:    tuned,
	}).SetupWithManager(mgr, concurrency); err != nil {
		setupLog.Error(err, "unable to create controller", "controller", "podrequest")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	ready := healthz.Ping
	if tuned {
		// Warmed up before leadership: ready once the caches the reconciler reads have their
		// initial lists, which is what a rollout waits for before stopping the old leader.
		ready = func(req *http.Request) error {
			for _, obj := range []client.Object{&PodRequest{}, &corev1.Pod{}} {
				informer, err := mgr.GetCache().GetInformer(req.Context(), obj, cache.BlockUntilSynced(false))
				if err != nil {
					return err
				}
				if !informer.HasSynced() {
					return fmt.Errorf("the %T cache has not synced", obj)
				}
			}
			return nil
		}
	}
	if err := mgr.AddReadyzCheck("readyz", ready); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	setupLog.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "problem running manager")
		os.Exit(1)
	}
}

// trimPod keeps what the reconciler reads of a Pod: metadata without managedFields and
// annotations, the containers' name, image and command, the phase and the conditions.
func trimPod(obj interface{}) (interface{}, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	containers := make([]corev1.Container, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		containers = append(containers, corev1.Container{Name: c.Name, Image: c.Image, Command: c.Command})
	}
	pod.ManagedFields = nil
	pod.Annotations = nil
	pod.Spec = corev1.PodSpec{Containers: containers}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase, Conditions: pod.Status.Conditions}
	return pod, nil
}

// trimPodTuned keeps exactly what the Rust operator's Pod cache keeps: name, namespace, UID,
// resourceVersion, creation and deletion times, the controller ownerReference, the containers'
// name, image and command, the phase, and the Ready condition.
func trimPodTuned(obj interface{}) (interface{}, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	trimmed := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp,
			DeletionTimestamp: pod.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	if ref := metav1.GetControllerOf(pod); ref != nil {
		trimmed.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	for _, c := range pod.Spec.Containers {
		trimmed.Spec.Containers = append(trimmed.Spec.Containers,
			corev1.Container{Name: c.Name, Image: c.Image, Command: c.Command})
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			trimmed.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return trimmed, nil
}

// liveHeap answers the bytes of live heap: HeapAlloc right after a forced collection, so that
// garbage not yet collected isn't counted (the figure to compare with the Rust operator's
// allocated bytes).
func liveHeap(w http.ResponseWriter, _ *http.Request) {
	goruntime.GC()
	var m goruntime.MemStats
	goruntime.ReadMemStats(&m)
	fmt.Fprintf(w, "%d\n", m.HeapAlloc)
}
