//! `custody keys`: key management against a running server.

use clap::{Args, Subcommand};
use custody_client::Client;

#[derive(Args)]
pub struct ServerArgs {
    /// The server's base URL
    #[arg(long, env = "CUSTODY_SERVER", default_value = "http://127.0.0.1:7300")]
    server: String,
    /// An admin API key (the bootstrap key printed on first start, or one with scope admin)
    #[arg(long, env = "CUSTODY_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key bound to one workspace and one scope; prints the key once
    #[command(long_about = "Create a key bound to one workspace and one scope.\n\n\
        Scopes: audit:write (append audit events), trace:write (append traces), read (search, checkpoints, \
        proofs), admin (all of these, and key management, within the workspace).\n\n\
        Example:\n  CUSTODY_KEY=cust_… custody keys create --workspace acme --scope audit:write --label permission-layer")]
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The workspace the key is valid in
        #[arg(long)]
        workspace: String,
        /// audit:write, trace:write, read or admin
        #[arg(long)]
        scope: String,
        /// A note on what the key is for
        #[arg(long)]
        label: Option<String>,
    },
    /// List keys (never their secrets)
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// Only the keys of this workspace
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Revoke a key; it is refused from the next request on
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// The key's id (see `custody keys list`)
        id: String,
    },
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { server, workspace, scope, label } => {
            let client = Client::new(&server.server, &server.key)?;
            let (token, info) = client.create_key(&workspace, &scope, label.as_deref()).await?;
            eprintln!(
                "created key {} ({} in workspace {}); it is shown only this once:",
                info.id, info.scope, workspace
            );
            println!("{token}");
        }
        KeysCommand::List { server, workspace } => {
            let client = Client::new(&server.server, &server.key)?;
            let keys = client.list_keys(workspace.as_deref()).await?;
            println!("{:<14} {:<20} {:<12} {:<31} {:<8} LABEL", "ID", "WORKSPACE", "SCOPE", "CREATED", "STATUS");
            for k in keys {
                println!(
                    "{:<14} {:<20} {:<12} {:<31} {:<8} {}",
                    k.id,
                    k.workspace.as_deref().unwrap_or("*"),
                    k.scope.as_str(),
                    k.created_at.to_string(),
                    if k.revoked_at.is_some() { "revoked" } else { "active" },
                    k.label.unwrap_or_default()
                );
            }
        }
        KeysCommand::Revoke { server, id } => {
            let client = Client::new(&server.server, &server.key)?;
            let info = client.revoke_key(&id).await?;
            println!("revoked key {} at {}", info.id, info.revoked_at.map(|t| t.to_string()).unwrap_or_default());
        }
    }
    Ok(())
}
