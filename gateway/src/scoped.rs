//! The preamble every co-op and domain route shared, as one extractor: the
//! caller's token, the scope the route needs, and the document its path
//! names (`{id}`, `{coop}` or `{domain}`: a name or a document id),
//! resolved and readable by the caller. A handler that takes an
//! [`InCoop`] or an [`InDomain`] starts where the rules do.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use icn_schemas::{Did, DocId, DocKind, Scope};

use crate::{AppError, Auth, Gateway, blocking, may_read};

/// The scope a route needs, as a type an extractor can check.
pub(crate) trait Needs {
    /// The scope; `None` when the handler decides (it depends on the body).
    const SCOPE: Option<Scope>;
}

macro_rules! scopes {
    ($($(#[$doc:meta])* $name:ident => $scope:expr;)*) => {
        $(
            $(#[$doc])*
            pub(crate) enum $name {}
            impl Needs for $name {
                const SCOPE: Option<Scope> = $scope;
            }
        )*
    };
}

scopes! {
    /// `coop:read`.
    CoopRead => Some(Scope::CoopRead);
    /// `coop:write`.
    CoopWrite => Some(Scope::CoopWrite);
    /// `coop:admin`.
    CoopAdmin => Some(Scope::CoopAdmin);
    /// `ledger:read`.
    LedgerRead => Some(Scope::LedgerRead);
    /// `ledger:write`.
    LedgerWrite => Some(Scope::LedgerWrite);
    /// `gov:read`.
    GovRead => Some(Scope::GovRead);
    /// `gov:write`.
    GovWrite => Some(Scope::GovWrite);
    /// Any token: the handler requires a scope that depends on the request.
    Decided => None;
}

/// A kind of document a route names in its path.
pub(crate) trait Named {
    /// Its kind.
    const KIND: DocKind;
    /// The path parameter that names it, besides `id`.
    const PARAM: &'static str;
    /// How a refusal names it.
    const WHAT: &'static str;
}

/// A co-op document.
pub(crate) enum CoopDoc {}
impl Named for CoopDoc {
    const KIND: DocKind = DocKind::Coop;
    const PARAM: &'static str = "coop";
    const WHAT: &'static str = "co-op";
}

/// A governance domain document.
pub(crate) enum DomainDoc {}
impl Named for DomainDoc {
    const KIND: DocKind = DocKind::Domain;
    const PARAM: &'static str = "domain";
    const WHAT: &'static str = "governance domain";
}

/// A request on one document of kind `K` by a caller holding scope `S`.
pub(crate) struct InDoc<K, S> {
    /// The caller.
    pub(crate) auth: Auth,
    /// The document's id.
    pub(crate) id: DocId,
    /// The name or id the path gave, as answers echo it.
    pub(crate) key: String,
    marker: PhantomData<fn() -> (K, S)>,
}

/// A request on one co-op.
pub(crate) type InCoop<S> = InDoc<CoopDoc, S>;

/// A request on one governance domain.
pub(crate) type InDomain<S> = InDoc<DomainDoc, S>;

impl<K: Named, S: Needs> FromRequestParts<Gateway> for InDoc<K, S> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, AppError> {
        let auth = Auth::from_request_parts(parts, gw).await?;
        if let Some(scope) = S::SCOPE {
            auth.require(scope)?;
        }
        let params = RawPathParams::from_request_parts(parts, gw)
            .await
            .map_err(|e| AppError::bad_request(e.body_text()))?;
        let key = params
            .iter()
            .find(|(name, _)| *name == "id" || *name == K::PARAM)
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| AppError::internal("a route names no document in its path"))?;
        let (gw, did, name) = (gw.clone(), auth.did, key.clone());
        let id = blocking(move || doc_id(&gw, K::KIND, K::WHAT, &did, &name)).await?;
        Ok(InDoc {
            auth,
            id,
            key,
            marker: PhantomData,
        })
    }
}

/// The document of `kind` named `key` (a name or a document id), if `did`
/// may read it.
fn doc_id(
    gw: &Gateway,
    kind: DocKind,
    what: &str,
    did: &Did,
    key: &str,
) -> Result<DocId, AppError> {
    let id = gw.index().resolve(kind, key)?;
    if kind == DocKind::Coop {
        if !gw.may_read_coop(&id, did) {
            return Err(AppError::forbidden(format!(
                "{did} is not a member of {what} {key:?}"
            )));
        }
    } else {
        may_read(gw.engine(), &id, did, &format!("{what} {key:?}"))?;
    }
    Ok(id)
}

/// The co-op named `key` (a name or a document id), if `did` may read it.
pub(crate) fn coop_id(gw: &Gateway, did: &Did, key: &str) -> Result<DocId, AppError> {
    doc_id(gw, DocKind::Coop, CoopDoc::WHAT, did, key)
}

/// The domain named `key` (a name or a document id), if `did` may read it.
pub(crate) fn domain_id(gw: &Gateway, did: &Did, key: &str) -> Result<DocId, AppError> {
    doc_id(gw, DocKind::Domain, DomainDoc::WHAT, did, key)
}
