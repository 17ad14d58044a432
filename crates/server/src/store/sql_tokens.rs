//! `TokenStore` written once for both databases (`token_store!` expands it for a store type).
//! A use is taken by one conditional `UPDATE`: on SQLite writers run one at a time; on
//! PostgreSQL a second writer of the row waits for the first and re-checks the condition on
//! the row the first left (read committed), so uses never pass the limit on either. What the
//! use pays for (a new agent, an approval) is written with it, or neither is.

macro_rules! token_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use $crate::store::rows::{conflict, token_from_row};
            use $crate::store::tokens::{TOKEN_COLUMNS, USABLE};
            use $crate::store::{StoreResult, TokenPays, TokenRecord, TokenStore, TokenUse};

            #[async_trait]
            impl TokenStore for $store {
                async fn insert_token(&self, token: &TokenRecord, token_hash: &str) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO enrollment_tokens \
                         (id, token_hash, created_by, created_at, expires_at, max_uses, uses) \
                         VALUES ($1, $2, $3, $4, $5, $6, 0)",
                    )
                    .bind(token.id.as_str())
                    .bind(token_hash)
                    .bind(&token.created_by)
                    .bind(token.created_at)
                    .bind(token.expires_at)
                    .bind(i64::from(token.max_uses))
                    .execute(&self.pool)
                    .await
                    .map_err(conflict("enrollment token"))?;
                    Ok(())
                }

                async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
                    sqlx::query(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at DESC"
                    ))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(token_from_row)
                    .collect()
                }

                async fn revoke_token(&self, id_prefix: &str, now: i64) -> StoreResult<Option<TokenRecord>> {
                    // The prefix is matched literally: `%` or `_` in it are characters, not
                    // wildcards (an empty prefix matches every token: no one).
                    if id_prefix.is_empty() {
                        return Ok(None);
                    }
                    let mut tx = self.write_tx().await?;
                    let prefix = format!("{}%", $crate::store::sql_agents::literal(id_prefix));
                    let rows = sqlx::query(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens \
                         WHERE id LIKE $1 ESCAPE '\\' LIMIT 2"
                    ))
                    .bind(&prefix)
                    .fetch_all(&mut *tx)
                    .await?;
                    let [row] = rows.as_slice() else {
                        return Ok(None);
                    };
                    let mut token = token_from_row(row)?;
                    sqlx::query(
                        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
                    )
                    .bind(now)
                    .bind(token.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    token.revoked = true;
                    Ok(Some(token))
                }

                async fn use_token(
                    &self,
                    token_hash: &str,
                    now: i64,
                    pays: TokenPays<'_>,
                ) -> StoreResult<TokenUse> {
                    // One statement takes the use only if the token is valid, so concurrent
                    // enrollments can never exceed max_uses; what it pays for is written with
                    // it, or neither is. A new agent's use is the store's own
                    // (`take_use_for_new_agent`): on PostgreSQL one statement, so that the
                    // token's row lock, which every enrollment of a fleet waits for, is not
                    // held across a round trip to this process.
                    let (agent, by) = match pays {
                        TokenPays::NewAgent(agent) => {
                            if self.take_use_for_new_agent(token_hash, now, agent).await? {
                                return Ok(TokenUse::Consumed);
                            }
                            return self.why_not_taken(token_hash, now).await;
                        }
                        TokenPays::Approval { agent, by } => (agent, by),
                    };
                    // Dropping `tx` rolls back; the approval is written first, so the row
                    // lock of the use is held only for the last statement and the commit.
                    let mut tx = self.write_tx().await?;
                    if !Self::approve_pending_in(&mut tx, agent, by, now).await? {
                        return Ok(TokenUse::NotNeeded);
                    }
                    if Self::take_use_in(&mut tx, token_hash, now).await? {
                        tx.commit().await?;
                        return Ok(TokenUse::Consumed);
                    }
                    drop(tx);
                    self.why_not_taken(token_hash, now).await
                }
            }

            impl $store {
                /// Takes one use of a valid token in `tx`; false if it is not valid.
                pub(crate) async fn take_use_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    token_hash: &str,
                    now: i64,
                ) -> StoreResult<bool> {
                    let taken = sqlx::query(&format!(
                        "UPDATE enrollment_tokens SET uses = uses + 1 WHERE {USABLE}"
                    ))
                    .bind(token_hash)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    Ok(taken == 1)
                }

                /// Why a use was not taken: the token is unknown, revoked, expired or used up.
                async fn why_not_taken(&self, token_hash: &str, now: i64) -> StoreResult<TokenUse> {
                    let row = sqlx::query(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1"
                    ))
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(TokenUse::Unknown);
                    };
                    let token = token_from_row(&row)?;
                    Ok(if token.revoked {
                        TokenUse::Revoked
                    } else if token.expires_at <= now {
                        TokenUse::Expired
                    } else {
                        TokenUse::UsedUp
                    })
                }
            }
        };
    };
}
pub(crate) use token_store;
