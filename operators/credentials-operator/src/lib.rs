//! credentials-operator: the talk's second example (slides 38–44) with OpenShift's
//! cloud-credential-operator API. A `CredentialsRequest` (`cloudcredential.openshift.io/v1`)
//! asks for AWS credentials with exactly the listed permissions; the operator mints an IAM user
//! with that inline policy and writes its access key to the requested Secret; deleting the
//! request removes the user.
//!
//! Layout: the API in [`api`]; the pure rules in [`plan`] (what to do with a request),
//! [`conditions`] (OpenShift's status conditions), [`secret`] (the Secrets around a request) and
//! [`mint`] (names, policy document, Secret contents); the IAM calls in [`iam`]; the watches and
//! API calls in [`controller`]; what a deployment needs in [`deploy`].

pub mod api;
pub mod conditions;
pub mod controller;
pub mod deploy;
pub mod iam;
pub mod mint;
pub mod plan;
pub mod secret;
