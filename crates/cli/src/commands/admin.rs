//! `postern admin add-user`: on the data directory's store, or with `--database` on the
//! database the server nodes share.

use anyhow::Result;

use postern_server::store::Database;

use crate::args::AdminCommand;

pub async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::AddUser {
            data_dir,
            database,
            name,
            role,
            create,
        } => {
            let database = Database::from_setting(database.as_deref())
                .map_err(|e| anyhow::anyhow!("--database: {e}"))?;
            // Clap requires one of the two; a database other than the data dir's needs none.
            let data_dir = data_dir.unwrap_or_default();
            let password = super::read_password("Password: ", false)?;
            postern_server::add_user(&database, &data_dir, &name, role, &password, create).await?;
            println!("added user {name} ({role})");
        }
    }
    Ok(())
}
