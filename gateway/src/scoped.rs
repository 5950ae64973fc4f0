//! The preamble every co-op route shared, as one extractor: the caller's
//! token, the scope the route needs, and the co-op its path names (`{id}`
//! or `{coop}`, a name or a document id), resolved and readable by the
//! caller. A handler that takes an [`InCoop`] starts where the rules do.

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
    /// Any token: the handler requires a scope that depends on the request.
    Decided => None;
}

/// A request on one co-op by a caller holding scope `S`.
pub(crate) struct InCoop<S> {
    /// The caller.
    pub(crate) auth: Auth,
    /// The co-op's document id.
    pub(crate) id: DocId,
    /// The name or id the path gave, as answers echo it.
    pub(crate) key: String,
    scope: PhantomData<fn() -> S>,
}

impl<S: Needs> FromRequestParts<Gateway> for InCoop<S> {
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
            .find(|(name, _)| matches!(*name, "id" | "coop"))
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| AppError::internal("a co-op route names no co-op in its path"))?;
        let (gw, did, name) = (gw.clone(), auth.did, key.clone());
        let id = blocking(move || coop_id(&gw, &did, &name)).await?;
        Ok(InCoop {
            auth,
            id,
            key,
            scope: PhantomData,
        })
    }
}

/// The co-op named `key` (a name or a document id), if `did` may read it.
pub(crate) fn coop_id(gw: &Gateway, did: &Did, key: &str) -> Result<DocId, AppError> {
    let id = gw.index().resolve(DocKind::Coop, key)?;
    may_read(gw.engine(), &id, did, &format!("co-op {key:?}"))?;
    Ok(id)
}
