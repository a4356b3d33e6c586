//! `scriptd users list|disable` and `scriptd tokens list|revoke`.

use crate::store::{Db, tokens, users};

use super::args::{TokensCommand, UsersCommand};

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

pub(super) fn users(cmd: UsersCommand, store: &Db) -> anyhow::Result<()> {
    match cmd {
        // Needs the defaults applied by the caller.
        UsersCommand::Add { .. } => anyhow::bail!("users add is handled by the caller"),
        UsersCommand::List => {
            println!("id\tparent\tlogin\tstate\tpermissions");
            for u in store.read(|tx| users::list(tx))? {
                let permissions: Vec<&str> =
                    u.permissions.iter().map(|p| p.name.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.parent_id.map_or("-".to_owned(), |p| p.to_string()),
                    u.login,
                    if u.disabled { "disabled" } else { "active" },
                    if permissions.is_empty() { "-".to_owned() } else { permissions.join(",") }
                );
            }
        }
        UsersCommand::Disable { id } => {
            store.write(|tx| users::disable(tx, id))?;
            println!("user {id} disabled");
        }
    }
    Ok(())
}

pub(super) fn tokens(cmd: TokensCommand, store: &Db) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create { .. } => {
            anyhow::bail!("tokens create is handled by the caller")
        }
        TokensCommand::List { user } => {
            println!("public_id\tuser\tcreated\tlast_used\texpires\tstate");
            let now = crate::store::now_text();
            for t in store.read(|tx| tokens::list(tx, user))? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.as_deref().is_some_and(|e| e <= now.as_str()) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.public_id,
                    t.user_id,
                    t.created_at,
                    or_dash(t.last_used_at.as_deref()),
                    or_dash(t.expires_at.as_deref()),
                    state
                );
            }
        }
        TokensCommand::Revoke { public_id, user } => match (public_id, user) {
            (Some(public_id), _) => {
                store.write(|tx| tokens::revoke(tx, &public_id))?;
                println!("token {public_id} revoked");
            }
            (None, Some(user)) => {
                let n = store.write(|tx| tokens::revoke_user(tx, user))?;
                println!("{n} tokens of user {user} revoked");
            }
            (None, None) => anyhow::bail!("give a token's public id or --user ID"),
        },
    }
    Ok(())
}
