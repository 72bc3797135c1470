package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managerName    = "pod-operator"
	typeReady      = "Ready"
	typeDegraded   = "Degraded"
	// conflictRetry is how long to wait before retrying after a status update conflict: the
	// cache is behind the apiserver and catches up within milliseconds.
	conflictRetry = 100 * time.Millisecond
	// createdStatusDelay is how long after a Pod's creation the status may wait for the Pod to
	// settle (tuned mode).
	createdStatusDelay = time.Second
)

// PodRequestReconciler makes the requested Pod exist, keeps it, replaces it when the spec
// changes, and never touches a Pod it doesn't control.
type PodRequestReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder
	// Tuned patches the status, skips short-lived statuses of a new Pod, filters Pod updates
	// and warms the caches up before leadership.
	Tuned bool
}

// outcome is what a reconcile found, as the status should tell it.
type outcome struct {
	pod             *corev1.Pod // nil clears podName and podPhase
	ready, degraded metav1.Condition
	err             error // returned after the status is written
	created         bool  // the Pod was just created
	starting        bool  // the Pod is ours and current, neither ready nor finished
}

// statusDelay is how long the status write should wait for the Pod to settle (tuned mode): after
// a create, and while a starting Pod is younger than createdStatusDelay. Zero or less: write now.
func (o outcome) statusDelay() time.Duration {
	switch {
	case o.created:
		return createdStatusDelay
	case o.starting:
		return min(createdStatusDelay, createdStatusDelay-time.Since(o.pod.CreationTimestamp.Time))
	}
	return 0
}

// Reconcile brings one PodRequest's Pod and status up to date.
func (r *PodRequestReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pr PodRequest
	if err := r.Get(ctx, req.NamespacedName, &pr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pr.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the Pod goes with the request through its ownerReference
	}
	before := pr.Status.DeepCopy()
	var original *PodRequest
	if r.Tuned {
		original = pr.DeepCopy() // what the merge patch is computed against
	}

	out, err := r.observe(ctx, &pr)
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.Tuned {
		// A new Pod is usually ready within moments, and its update wakes this request: one
		// status write then, rather than "Pending" now and "Ready" right after. If it isn't,
		// the not-ready status is written when this comes due.
		if wait := out.statusDelay(); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	pr.Status.ObservedGeneration = pr.Generation
	pr.Status.PodName, pr.Status.PodPhase = "", ""
	if out.pod != nil {
		pr.Status.PodName, pr.Status.PodPhase = out.pod.Name, string(out.pod.Status.Phase)
	}
	for _, c := range []metav1.Condition{out.ready, out.degraded} {
		c.ObservedGeneration = pr.Generation
		meta.SetStatusCondition(&pr.Status.Conditions, c)
	}
	if !equality.Semantic.DeepEqual(before, &pr.Status) {
		if r.Tuned {
			// A JSON merge patch without resourceVersion: only this controller writes the
			// status, so no optimistic locking and no conflicts.
			if err := r.Status().Patch(ctx, &pr, client.MergeFrom(original)); err != nil {
				return ctrl.Result{}, err
			}
		} else if err := r.Status().Update(ctx, &pr); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, out.err
}

func (r *PodRequestReconciler) observe(ctx context.Context, pr *PodRequest) (outcome, error) {
	var pod corev1.Pod
	if err := r.Get(ctx, client.ObjectKeyFromObject(pr), &pod); apierrors.IsNotFound(err) {
		return r.createPod(ctx, pr)
	} else if err != nil {
		return outcome{}, err
	}
	if !metav1.IsControlledBy(&pod, pr) {
		msg := conflictMessage(&pod)
		if c := meta.FindStatusCondition(pr.Status.Conditions, typeDegraded); c == nil ||
			c.Status != metav1.ConditionTrue || c.Reason != "PodConflict" {
			r.Recorder.Eventf(pr, nil, corev1.EventTypeWarning, "PodConflict", "Create", "%s", msg)
		}
		return outcome{
			ready:    condition(typeReady, false, "PodConflict", msg),
			degraded: condition(typeDegraded, true, "PodConflict", msg),
		}, nil
	}
	if !pod.DeletionTimestamp.IsZero() {
		msg := fmt.Sprintf("Pod %s is terminating; it will be recreated", pod.Name)
		return outcome{pod: &pod, ready: condition(typeReady, false, "PodTerminating", msg), degraded: notDegraded()}, nil
	}
	if matchesSpec(pr, &pod) {
		ready := podReady(&pod)
		finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		return outcome{
			pod: &pod, ready: ready, degraded: notDegraded(),
			starting: ready.Status != metav1.ConditionTrue && !finished,
		}, nil
	}
	// Image and command of a Pod are immutable: replace it. The precondition makes sure only
	// the Pod we looked at is deleted.
	err := r.Delete(ctx, &pod, client.Preconditions{UID: &pod.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return outcome{}, err
	}
	r.Recorder.Eventf(pr, nil, corev1.EventTypeNormal, "Replaced", "Delete",
		"Deleted Pod %s to apply spec generation %d; a new Pod follows once it is gone", pod.Name, pr.Generation)
	msg := fmt.Sprintf("Replacing Pod %s to apply spec generation %d", pod.Name, pr.Generation)
	return outcome{pod: &pod, ready: condition(typeReady, false, "Replacing", msg), degraded: notDegraded()}, nil
}

func (r *PodRequestReconciler) createPod(ctx context.Context, pr *PodRequest) (outcome, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pr.Name,
			Namespace: pr.Namespace,
			Labels:    map[string]string{"app": pr.Name, managedByLabel: managerName},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:    pr.Spec.Name,
			Image:   pr.Spec.Image,
			Command: pr.Spec.Command,
		}}},
	}
	if err := controllerutil.SetControllerReference(pr, pod, r.Scheme); err != nil {
		return outcome{}, err
	}
	err := r.Create(ctx, pod)
	if err == nil {
		r.Recorder.Eventf(pr, nil, corev1.EventTypeNormal, "Created", "Create", "Created Pod %s", pod.Name)
		return outcome{pod: pod, ready: podReady(pod), degraded: notDegraded(), created: true}, nil
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || (status.Status().Code != 403 && status.Status().Code != 422) {
		return outcome{}, err // AlreadyExists included: retried with backoff
	}
	apiMsg := status.Status().Message
	reason := "AdmissionDenied"
	switch {
	case strings.Contains(apiMsg, "exceeded quota"):
		reason = "QuotaExceeded"
	case status.Status().Code == 422:
		reason = "InvalidPod"
	}
	r.Recorder.Eventf(pr, nil, corev1.EventTypeWarning, "FailedCreate", "Create", "%s", apiMsg)
	msg := fmt.Sprintf("Pod %s was rejected: %s", pr.Name, apiMsg)
	return outcome{
		ready:    condition(typeReady, false, reason, msg),
		degraded: condition(typeDegraded, true, reason, msg),
		err:      fmt.Errorf("the apiserver rejected Pod %s: %s", pr.Name, apiMsg),
	}, nil
}

// matchesSpec reports whether the Pod's single container says what the spec says.
func matchesSpec(pr *PodRequest, pod *corev1.Pod) bool {
	if len(pod.Spec.Containers) != 1 {
		return false
	}
	c := pod.Spec.Containers[0]
	return c.Name == pr.Spec.Name && c.Image == pr.Spec.Image && slices.Equal(c.Command, pr.Spec.Command)
}

func conflictMessage(pod *corev1.Pod) string {
	owner := "not controlled by this PodRequest"
	if ref := metav1.GetControllerOf(pod); ref != nil {
		owner = fmt.Sprintf("controlled by %s %s", ref.Kind, ref.Name)
	}
	return fmt.Sprintf("Pod %s already exists and is %s; it is left untouched. The Pod will be created once it is gone", pod.Name, owner)
}

func podReady(pod *corev1.Pod) metav1.Condition {
	phase := pod.Status.Phase
	if phase == "" {
		phase = corev1.PodPending
	}
	if phase == corev1.PodRunning && isReady(pod) {
		return condition(typeReady, true, "PodReady", fmt.Sprintf("Pod %s is running and ready", pod.Name))
	}
	reason := map[corev1.PodPhase]string{
		corev1.PodPending:   "PodPending",
		corev1.PodRunning:   "PodNotReady",
		corev1.PodSucceeded: "PodSucceeded",
		corev1.PodFailed:    "PodFailed",
	}[phase]
	if reason == "" {
		reason = "PodUnknown"
	}
	return condition(typeReady, false, reason, fmt.Sprintf("Pod %s is %s", pod.Name, phase))
}

func notDegraded() metav1.Condition {
	return condition(typeDegraded, false, "AsExpected", "")
}

func condition(typ string, status bool, reason, message string) metav1.Condition {
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: message}
}

// podChanged passes Pod creations and deletions, and the updates that change what a reconcile
// reads, as the Rust operator's Pod fingerprint does: UID, deletion, the controller
// ownerReference, the containers' name, image and command, the phase, and whether Ready is True.
var podChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Pod)
		pod, okNew := e.ObjectNew.(*corev1.Pod)
		if !okOld || !okNew {
			return true
		}
		return old.UID != pod.UID ||
			old.Status.Phase != pod.Status.Phase ||
			isReady(old) != isReady(pod) ||
			old.DeletionTimestamp.IsZero() != pod.DeletionTimestamp.IsZero() ||
			!slices.EqualFunc(old.Spec.Containers, pod.Spec.Containers, func(a, b corev1.Container) bool {
				return a.Name == b.Name && a.Image == b.Image && slices.Equal(a.Command, b.Command)
			}) ||
			!equality.Semantic.DeepEqual(metav1.GetControllerOf(old), metav1.GetControllerOf(pod))
	},
}

func isReady(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// SetupWithManager registers the controller: PodRequest spec changes and owned Pods trigger it.
// Tuned, only the Pod events that podChanged passes trigger it, and its sources start before
// leadership is won.
func (r *PodRequestReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	opts := controller.Options{MaxConcurrentReconciles: concurrency}
	var podOpts []builder.OwnsOption
	if r.Tuned {
		warmup := true
		opts.EnableWarmup = &warmup
		podOpts = append(podOpts, builder.WithPredicates(podChanged))
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&PodRequest{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Pod{}, podOpts...).
		WithOptions(opts).
		Named("podrequest").
		Complete(r)
}
