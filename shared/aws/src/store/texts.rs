//! Large texts in S3: a source or result over the item limit is stored
//! there, and read back with the job.

use super::*;

impl DynamoStore {
    /// Store a text in S3.
    pub async fn put_text(
        &self,
        key: &str,
        text: &str,
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.clients
            .s3
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .body(text.as_bytes().to_vec().into())
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 PutObject", e))?;
        Ok(())
    }

    /// Read an S3 object as bytes.
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 GetObject", e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::backend("reading an S3 object", e))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// The size of an S3 object in bytes.
    pub async fn object_size(&self, bucket: &str, key: &str) -> Result<u64, StoreError> {
        let out = self
            .clients
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::backend("S3 HeadObject", e))?;
        Ok(out.content_length.unwrap_or(0).max(0) as u64)
    }

    pub(super) async fn get_text(&self, key: &str) -> Result<String, StoreError> {
        let bytes = self.get_bytes(&self.config.bucket, key).await?;
        String::from_utf8(bytes)
            .map_err(|_| StoreError::Corrupt(format!("s3 object {key} is not UTF-8")))
    }

    /// Store a text inline when small, else in S3 under `key`; the value
    /// for the item, or the S3 key.
    pub(super) async fn place_text<'a>(
        &self,
        text: &'a str,
        key: impl FnOnce() -> String,
    ) -> Result<(Option<&'a str>, Option<String>), StoreError> {
        if text.len() > INLINE_LIMIT {
            let k = key();
            self.put_text(&k, text, "text/plain; charset=utf-8").await?;
            Ok((None, Some(k)))
        } else {
            Ok((Some(text), None))
        }
    }
}
