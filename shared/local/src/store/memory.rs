//! The translation memory facet.

use super::*;

#[async_trait]
impl MemoryStore for SqliteStore {
    async fn memory_get(&self, key: &str) -> PortResult<Option<(String, Option<f64>)>> {
        let key = key.to_owned();
        Ok(self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT translation, confidence FROM memory WHERE key = ?1",
                        [key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
            })
            .await?)
    }

    async fn memory_put(
        &self,
        key: &str,
        translation: &str,
        confidence: Option<f64>,
    ) -> PortResult<()> {
        let (key, translation) = (key.to_owned(), translation.to_owned());
        Ok(self
            .write(move |conn| {
                exec(conn,
                    "INSERT OR IGNORE INTO memory (key, translation, confidence, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![key, translation, confidence, ts(Utc::now())],
                )?;
                Ok(())
            })
            .await?)
    }
}
