//! `postern admin add-user`

use anyhow::Result;

use crate::args::AdminCommand;

pub async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::AddUser {
            data_dir,
            name,
            role,
            create,
        } => {
            let password = super::read_password("Password: ", false)?;
            postern_server::add_user(
                &postern_server::store::Database::DataDir,
                &data_dir,
                &name,
                role,
                &password,
                create,
            )
            .await?;
            println!("added user {name} ({role})");
        }
    }
    Ok(())
}
