//! `aims bundle show`: fetch and display the server's public SPIFFE trust bundle.
//!
//! The bundle is public, so this command needs no API token and sends none. It only displays
//! the document; verifying anything with it is the job of the SDK's agent side and of
//! relying parties.

use serde_json::Value;

use super::ClientOpts;
use super::output::{print, str_field, table};

/// SPIFFE trust bundle commands.
#[derive(clap::Subcommand, Debug)]
pub enum BundleCommand {
    /// Show the SPIFFE trust bundle (JWT-SVID keys, sequence, refresh hint).
    Show,
}

/// Runs one `aims bundle` command.
pub async fn run_bundle(opts: &ClientOpts, cmd: BundleCommand) -> anyhow::Result<()> {
    let client = opts.public_client()?;
    match cmd {
        BundleCommand::Show => {
            let bundle = client.bundle().await?;
            print(opts.output, &bundle, || render_bundle(&bundle))
        }
    }
}

/// The bundle's sequence and refresh hint, then its keys as a table.
fn render_bundle(bundle: &Value) -> String {
    let mut out = format!(
        "SPIFFE bundle sequence {}, refresh hint {}.\n",
        str_field(bundle, "spiffe_sequence"),
        bundle
            .get("spiffe_refresh_hint")
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
    );
    let keys = bundle
        .get("keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if keys.is_empty() {
        out.push_str("No keys.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            ["kid", "use", "kty", "crv", "alg"]
                .iter()
                .map(|f| str_field(k, f))
                .collect()
        })
        .collect();
    out.push_str(&table(&["KID", "USE", "KTY", "CRV", "ALG"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_render_keys_and_metadata() {
        let bundle = serde_json::json!({
            "spiffe_sequence": 3,
            "spiffe_refresh_hint": 300,
            "keys": [
                {"kid": "k1", "use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "…", "y": "…"},
                {"kid": "k2", "use": "jwt-svid", "kty": "EC", "crv": "P-256", "alg": "ES256"}
            ]
        });
        assert_eq!(
            render_bundle(&bundle),
            "SPIFFE bundle sequence 3, refresh hint 300s.\n\
             KID  USE       KTY  CRV    ALG\n\
             k1   jwt-svid  EC   P-256  -\n\
             k2   jwt-svid  EC   P-256  ES256\n"
        );
        assert_eq!(
            render_bundle(&serde_json::json!({})),
            "SPIFFE bundle sequence -, refresh hint -.\nNo keys.\n"
        );
    }
}
