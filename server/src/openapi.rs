//! Owns the OpenAPI 3.1 document and its route, `/api/v1/openapi.json` ([`router`], merged
//! into the API's router by `serve`): the paths come from the handlers' `#[utoipa::path]`, the
//! schemas of the engine's records from the documentation mirrors in `crate::http::schemas`
//! (the engine and studies crates stay free of utoipa; a test here keeps each mirror's field
//! names equal to the real type's JSON). It sits above `crate::http`, which does not know it.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ProblemBody};
use crate::http::auth::{LoginBody, LoginResponse, WhoAmI};
use crate::http::models::AddModelBody;
use crate::http::schemas::{
    ArrayRefDoc, ColumnDoc, InputInfo, KindInfo, ModelVersionDoc, NamedArrayDoc, ReviewDoc,
    StudyRecordDoc, StudyResultDoc,
};
use crate::http::studies::SubmitBody;

/// Adds the bearer scheme the secured paths name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "DTOP API", description = "Studies and models of the DTOP digital-twin platform."),
    paths(
        crate::http::auth::login,
        crate::http::auth::logout,
        crate::http::auth::whoami,
        crate::http::studies::kinds,
        crate::http::studies::defaults,
        crate::http::studies::submit,
        crate::http::studies::list,
        crate::http::studies::get,
        crate::http::studies::cancel,
        crate::http::studies::events,
        crate::http::studies::result,
        crate::http::studies::array,
        crate::http::studies::input,
        crate::http::models::list,
        crate::http::models::versions,
        crate::http::models::version,
        crate::http::models::add,
        crate::http::models::review,
        crate::http::rigs::send,
        crate::http::rigs::limits,
        crate::http::rigs::history_json,
        crate::http::rigs::history_csv,
        crate::http::rigs::parameters_json,
        crate::http::rigs::parameters_csv,
        openapi_json,
        crate::http::healthz,
        crate::http::metrics_doc,
    ),
    components(schemas(
        ErrorBody, ProblemBody, LoginBody, LoginResponse, WhoAmI, KindInfo, SubmitBody,
        AddModelBody, StudyRecordDoc, StudyResultDoc, ArrayRefDoc, NamedArrayDoc, ColumnDoc,
        ModelVersionDoc, ReviewDoc, InputInfo, crate::http::models::ReviewBody,
        crate::live::record::RecordSource, crate::http::rigs::CommandRequestDoc, crate::http::rigs::Accepted,
        crate::live::GainLimit, crate::live::history::HistoryAnswer, crate::live::history::Envelope,
        crate::live::parameters::ParametersAnswer, crate::live::parameters::ParameterRow,
        crate::live::parameters::Record,
    )),
    modifiers(&BearerScheme),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The OpenAPI 3.1 document of this API (no authentication).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, content_type = "application/json", description = "This document")))]
pub async fn openapi_json() -> Response {
    Json(document()).into_response()
}

/// The document's route, for `crate::http::router` to serve with the API's layers.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/api/v1/openapi.json", get(openapi_json))
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn properties(schema: &str) -> Vec<String> {
        let doc = serde_json::to_value(document()).unwrap();
        let mut keys: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {schema}"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn json_keys(value: serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn documents_exactly_the_routes_the_router_has() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = crate::http::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn is_openapi_3_1() {
        let doc = serde_json::to_value(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }

    #[test]
    fn mirrors_have_the_field_names_of_the_engine_types() {
        let record = dtop_engine::StudyRecord {
            id: dtop_engine::StudyId("st_x".into()),
            kind: dtop_studies::StudyKind::Modal,
            model_ref: None,
            model: dtop_studies::model::builtin_models()[0].1.clone(),
            params: serde_json::json!({}),
            seed: 1,
            submitted_by: "a".into(),
            submitted_at: "t".into(),
            finished_at: None,
            state: dtop_engine::StudyState::Queued,
            chunks_total: 1,
            chunks_done: 0,
            error: None,
            revision: 1,
            inputs: vec![],
        };
        assert_eq!(
            properties("StudyRecord"),
            json_keys(serde_json::to_value(&record).unwrap())
        );
        let array = dtop_engine::ArrayRef {
            name: "a".into(),
            sha256_hex: "0".into(),
            rows: 1,
            columns: vec![],
        };
        assert_eq!(
            properties("ArrayRef"),
            json_keys(serde_json::to_value(&array).unwrap())
        );
        let result = dtop_engine::StudyResult {
            study: record.id.clone(),
            summary: serde_json::json!({}),
            arrays: vec![],
            proposed_model: Some("m@2".into()),
        };
        assert_eq!(
            properties("StudyResult"),
            json_keys(serde_json::to_value(&result).unwrap())
        );
        let model = dtop_engine::ModelVersion {
            name: "m".into(),
            version: 1,
            spec: record.model.clone(),
            provenance: dtop_studies::Provenance::Manual,
            created_by: "a".into(),
            created_at: "t".into(),
            status: dtop_engine::ModelStatus::Approved,
            review: Some(dtop_engine::Review {
                by: "o".into(),
                at: "t".into(),
                note: String::new(),
            }),
        };
        assert_eq!(
            properties("ModelVersion"),
            json_keys(serde_json::to_value(&model).unwrap())
        );
        let named = dtop_studies::NamedArray {
            name: "n".into(),
            columns: vec![],
        };
        assert_eq!(
            properties("NamedArray"),
            json_keys(serde_json::to_value(&named).unwrap())
        );
    }
}
