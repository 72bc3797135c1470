//! The {{Kind}} controller against a real control plane (etcd and kube-apiserver, from
//! Operon's envtest), with exactly the RBAC the operator's manifests grant it.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::FutureExt;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use operon_cluster::{apply, wait};
use operon_runtime::manager::Manager;
use {{crate}}::api::{{kind_snake}}::{{{Kind}}, condition};
use {{crate}}::controller::{self, {{kind_snake}}::FINALIZER};
use {{crate}}::{api, deploy};

const TIMEOUT: Duration = Duration::from_secs(60);
const MANAGER: &str = "{{name}}-test";

#[tokio::test]
async fn {{kind_snake}}_gets_ready_and_is_cleaned_up_on_deletion() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let admin = env.client().await?;
    for crd in api::crds() {
        apply::apply_crd(&admin, &crd, MANAGER).await?;
    }
    // The operator runs as its ServiceAccount with the deployed RBAC: a missing rule fails.
    let operator = deploy::manifests(deploy::IMAGE)?;
    let account = operator.service_account();
    let account = account["metadata"]["name"]
        .as_str()
        .context("ServiceAccount without a name")?;
    let identity = [operator.namespace_object(), operator.service_account()];
    for object in identity.iter().chain(&operator.operator_rbac()) {
        apply::apply(&admin, object, MANAGER).await?;
    }
    let client = env
        .service_account_client(&operator.namespace, account)
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut manager = Manager::new("{{name}}", client).stop(stopped.map(|_| ()));
    controller::register(&mut manager, &controller::Settings { concurrency: 2 });
    let running = tokio::spawn(manager.run());

{{test_api}}
    let (_, sample) = deploy::SAMPLES
        .iter()
        .find(|(file, _)| *file == "{{sample_file}}")
        .context("no sample {{sample_file}} in deploy::SAMPLES")?;
    let mut sample: {{Kind}} = serde_saphyr::from_str(sample)?;
    sample.metadata.namespace = None;
    sample.metadata.name = Some(format!(
        "{}-{}",
        sample.name_any(),
        operon_envtest::random_suffix()
    ));
    let created = resources.create(&PostParams::default(), &sample).await?;
    let name = created.name_any();
    let generation = created.metadata.generation;

    wait::until("Ready, with the finalizer", TIMEOUT, || async {
        let current = resources.get(&name).await.map_err(|e| e.to_string())?;
        let status = current.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == condition::READY);
        let finalized = current.finalizers().iter().any(|f| f == FINALIZER);
        match ready {
            Some(c) if c.status == "True" && finalized && status.observed_generation == generation => {
                Ok(())
            }
            _ => Err(format!("status {status:?}, finalizers {:?}", current.finalizers())),
        }
    })
    .await?;

    resources.delete(&name, &DeleteParams::default()).await?;
    wait::until("deleted once cleaned up", TIMEOUT, || async {
        match resources.get_opt(&name).await {
            Ok(None) => Ok(()),
            Ok(Some(o)) => Err(format!("still there, finalizers {:?}", o.finalizers())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;

    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, running)
        .await
        .context("the controller did not stop")??;
    Ok(())
}
