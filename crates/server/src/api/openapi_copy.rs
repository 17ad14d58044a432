//! The web app's copy of the OpenAPI document (`web/src/api/openapi.json`), from which its
//! build generates the TypeScript API types. This test fails when the copy differs from the
//! document the server serves; `POSTERN_UPDATE_OPENAPI=1 cargo test -p postern-server --lib
//! openapi_copy` rewrites it.

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_apps_copy_of_the_openapi_document_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/src/api/openapi.json");
        let mut current = serde_json::to_string_pretty(&super::super::openapi()).unwrap();
        current.push('\n');
        if std::env::var_os("POSTERN_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &current).unwrap();
        }
        let copy = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            copy == current,
            "{} is not the server's OpenAPI document: run POSTERN_UPDATE_OPENAPI=1 cargo test -p postern-server --lib openapi_copy",
            path.display()
        );
    }
}
