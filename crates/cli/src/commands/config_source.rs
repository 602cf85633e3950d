//! Where `meshward check` and `meshward analyze` read the mesh's configuration: files and
//! folders (`-f`, offline), or the running control plane's store (`GET /api/v1/snapshot`).
//!
//! Both end as the same [`LoadReport`], and the commands run the same `meshward-policy` code on
//! it: the control plane only lists its documents, which are reloaded here with the loader the
//! proxies use (`meshward_control::admin::StoreSnapshot::report`), so a resource keeps the file
//! and line it was loaded from. What differs live is only who wrote a resource: a watched file,
//! or `meshward apply` (whose file lives on the machine that applied it, and may have changed
//! since), which [`Configuration::origin`] says.

use std::path::PathBuf;

use anyhow::Context;
use meshward_api::{FieldPath, Kind, LoadReport, LoadedResource, ResourceId, load_paths};
use meshward_control::admin::{StoreSnapshot, WrittenBy};

use super::control_api::ControlPlaneUrl;
use crate::mesh::control::resources_file;
use crate::mesh::state::Home;

/// What `origin` text adds for a resource `meshward apply` wrote.
pub(crate) const APPLIED: &str = "meshward apply";

/// A mesh configuration to check or analyze.
pub(crate) struct Configuration {
    /// The resources, as loaded.
    pub(crate) report: LoadReport,
    /// The control plane's snapshot, when read live.
    pub(crate) live: Option<StoreSnapshot>,
}

/// The local mesh's control plane loads the resources of the files given to `meshward up` from
/// the copy `up` generated (`resources.json`); where those files still hold a resource
/// unchanged, it is located in them instead, so findings and traces name the tutorial's own
/// file and line. Without a local mesh (another control plane), nothing changes.
fn locate_in_up_manifests(report: &mut LoadReport) {
    let Ok(home) = Home::from_env() else { return };
    let Some(state) = home.read().ok().flatten() else {
        return;
    };
    if state.manifests.is_empty() {
        return;
    }
    let Ok(manifests) = load_paths(&state.manifests) else {
        return;
    };
    let generated = resources_file(&home).display().to_string();
    report.restate_origins(&generated, &manifests);
}

impl Configuration {
    /// Files and folders, offline.
    pub(crate) fn files(paths: &[PathBuf]) -> anyhow::Result<Self> {
        Ok(Self {
            report: load_paths(paths)?,
            live: None,
        })
    }

    /// The running control plane's store. With `enforced`, the JWKS the control plane fetched
    /// are inlined as the sidecars inline them (what `check` needs to verify tokens as they
    /// do); without, the resources are as written (what `analyze` judges).
    pub(crate) fn live(control_plane: &ControlPlaneUrl, enforced: bool) -> anyhow::Result<Self> {
        let body = control_plane.get("/api/v1/snapshot")?;
        let snapshot: StoreSnapshot = serde_json::from_value(body)
            .context("the control plane's snapshot has an unexpected shape")?;
        let mut report = if enforced {
            snapshot.enforced_report()
        } else {
            snapshot.report()
        };
        locate_in_up_manifests(&mut report);
        Ok(Self {
            report,
            live: Some(snapshot),
        })
    }

    /// The control plane's store version, when live.
    pub(crate) fn version(&self) -> Option<u64> {
        self.live.as_ref().map(|s| s.version)
    }

    /// True when `meshward apply` wrote the resource `id` (live only).
    pub(crate) fn applied(&self, id: &ResourceId) -> bool {
        self.live
            .as_ref()
            .and_then(|s| s.written_by(id))
            .is_some_and(|w| *w == WrittenBy::Apply)
    }

    /// The resource `kind ns/name` (the last copy, as a repeated `kubectl apply` leaves it);
    /// resources embedded in PolicyTests count, as `check` compiles them.
    pub(crate) fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<&LoadedResource> {
        let embedded = self.report.tests.iter().flat_map(|t| &t.resources);
        self.report.resources.iter().chain(embedded).rfind(|r| {
            let id = r.resource.id();
            id.kind == kind && id.namespace == namespace && id.name == name
        })
    }

    /// `file:line` of `field` of the resource `kind ns/name` (its first line when the field has
    /// no location), followed by `via meshward apply` when the live store got it that way.
    pub(crate) fn origin(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        field: &FieldPath,
    ) -> Option<String> {
        let loaded = self.find(kind, namespace, name)?;
        let origin = &loaded.origin;
        let mut text = match origin.locate(field).or_else(|| origin.start()) {
            Some(location) => format!("{}:{}", origin.file, location.line),
            None => origin.file.to_string(),
        };
        if self.applied(&loaded.resource.id()) {
            text.push_str(&format!(" via {APPLIED}"));
        }
        Some(text)
    }
}
