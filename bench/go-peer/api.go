package main

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	crscheme "sigs.k8s.io/controller-runtime/pkg/scheme"
)

// GroupVersion is pod.jewzaam.org/v1alpha1, the Rust pod-operator's API group.
var GroupVersion = schema.GroupVersion{Group: "pod.jewzaam.org", Version: "v1alpha1"}

var (
	// SchemeBuilder registers PodRequest and PodRequestList.
	SchemeBuilder = &crscheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() {
	SchemeBuilder.Register(&PodRequest{}, &PodRequestList{})
}

// PodRequestSpec asks for one Pod running Command in Image.
type PodRequestSpec struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
}

// PodRequestStatus is what the operator observed and did.
type PodRequestStatus struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	PodName            string             `json:"podName,omitempty"`
	PodPhase           string             `json:"podPhase,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// PodRequest is the Schema for the podrequests API.
type PodRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PodRequestSpec   `json:"spec"`
	Status PodRequestStatus `json:"status,omitempty"`
}

// PodRequestList contains a list of PodRequest.
type PodRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PodRequest `json:"items"`
}

// DeepCopyInto copies the receiver into out.
func (in *PodRequestSpec) DeepCopyInto(out *PodRequestSpec) {
	*out = *in
	if in.Command != nil {
		out.Command = make([]string, len(in.Command))
		copy(out.Command, in.Command)
	}
}

// DeepCopyInto copies the receiver into out.
func (in *PodRequestStatus) DeepCopyInto(out *PodRequestStatus) {
	*out = *in
	if in.Conditions != nil {
		out.Conditions = make([]metav1.Condition, len(in.Conditions))
		for i := range in.Conditions {
			in.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
}

// DeepCopy returns a deep copy of the status.
func (in *PodRequestStatus) DeepCopy() *PodRequestStatus {
	if in == nil {
		return nil
	}
	out := new(PodRequestStatus)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies the receiver into out.
func (in *PodRequest) DeepCopyInto(out *PodRequest) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.DeepCopyInto(&out.Spec)
	in.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns a deep copy of the PodRequest.
func (in *PodRequest) DeepCopy() *PodRequest {
	if in == nil {
		return nil
	}
	out := new(PodRequest)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *PodRequest) DeepCopyObject() runtime.Object {
	return in.DeepCopy()
}

// DeepCopyInto copies the receiver into out.
func (in *PodRequestList) DeepCopyInto(out *PodRequestList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]PodRequest, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopyObject implements runtime.Object.
func (in *PodRequestList) DeepCopyObject() runtime.Object {
	if in == nil {
		return nil
	}
	out := new(PodRequestList)
	in.DeepCopyInto(out)
	return out
}
