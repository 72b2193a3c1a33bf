//! Row helpers of the PostgreSQL store: the statements shared by several
//! methods, rows to records, JSON columns, errors and identifiers.

use super::*;

/// Adds or replaces a photo's embedding of `embedding.model`.
pub(super) async fn upsert_embedding<C: GenericClient + Sync>(
    statements: &mut HashMap<&'static str, Statement>,
    tx: &C,
    seq: i64,
    embedding: &StoredEmbedding,
    at_ms: i64,
) -> StoreResult<()> {
    let upsert = statement(statements, tx, UPSERT_EMBEDDING).await?;
    let dims = i32::try_from(embedding.vector.dims()).unwrap_or(i32::MAX);
    tx.execute(
        &upsert,
        &[
            &seq,
            &embedding.model,
            &embedding.version,
            &dims,
            &embedding.vector.to_le_bytes(),
            &at_ms,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Appends events inside a transaction; an id already there is skipped.
pub(super) async fn append_in<C: GenericClient + Sync>(
    statements: &mut HashMap<&'static str, Statement>,
    tx: &C,
    events: &[Event],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let insert = statement(statements, tx, INSERT_EVENT).await?;
    for event in events {
        let body = to_json(event)?;
        tx.execute(
            &insert,
            &[
                &event.id,
                &event.kind.name(),
                &event.photo_id,
                &event.at_ms,
                &body,
            ],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

pub(super) fn photo_from_row(row: &Row) -> StoreResult<PhotoRecord> {
    let id: String = row.try_get(1).map_err(pg_error)?;
    let status: String = row.try_get(2).map_err(pg_error)?;
    let text = |i: usize| row.try_get::<_, String>(i).map_err(pg_error);
    let opt_text = |i: usize| row.try_get::<_, Option<String>>(i).map_err(pg_error);
    Ok(PhotoRecord {
        seq: row.try_get(0).map_err(pg_error)?,
        status: Status::parse(&status).ok_or_else(|| StoreError::Corrupt {
            id: id.clone(),
            reason: format!("unknown status {status:?}"),
        })?,
        history: from_json_field(&text(3)?, &id, "history")?,
        submission: from_json_field(&text(4)?, &id, "submission")?,
        original: from_json_field(&text(5)?, &id, "original")?,
        analysis: opt_json(opt_text(6)?, &id, "analysis")?,
        review: opt_json(opt_text(7)?, &id, "review")?,
        human_review: opt_json(opt_text(8)?, &id, "human_review")?,
        keywords: from_json_field(&text(9)?, &id, "keywords")?,
        error: opt_text(10)?,
        created_ms: row.try_get(11).map_err(pg_error)?,
        updated_ms: row.try_get(12).map_err(pg_error)?,
        id,
    })
}

pub(super) fn opt_json<T: DeserializeOwned>(
    text: Option<String>,
    id: &str,
    field: &str,
) -> StoreResult<Option<T>> {
    text.map(|s| from_json_field(&s, id, field)).transpose()
}

pub(super) fn dead_from_row(row: &Row) -> StoreResult<DeadJob> {
    let job_id: String = row.try_get(1).map_err(pg_error)?;
    let job: String = row.try_get(2).map_err(pg_error)?;
    let attempts: i32 = row.try_get(3).map_err(pg_error)?;
    Ok(DeadJob {
        seq: row.try_get(0).map_err(pg_error)?,
        job: from_json::<Job>(&job, &format!("dead job {job_id}"))?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt {
            id: format!("dead job {job_id}"),
            reason: format!("attempts is {attempts}"),
        })?,
        error: row.try_get(4).map_err(pg_error)?,
        at_ms: row.try_get(5).map_err(pg_error)?,
    })
}

pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding JSON: {e}")))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str, id: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

pub(super) fn from_json_field<T: DeserializeOwned>(
    text: &str,
    id: &str,
    field: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        id: id.to_string(),
        reason: format!("{field}: {e}"),
    })
}

/// LIMIT takes a BIGINT; `usize::MAX` means no limit.
pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Connection trouble (closed, I/O, the server shutting down or refusing
/// connections) is worth retrying; what the database reports about a
/// statement is not.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    if e.is_closed() {
        return StoreError::Unavailable(e.to_string());
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 53: insufficient resources (too many
        // connections); 57P: operator intervention (shutdown, starting up).
        return if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
            StoreError::Unavailable(db.to_string())
        } else {
            StoreError::Backend(db.to_string())
        };
    }
    if e.source()
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
    {
        return StoreError::Unavailable(e.to_string());
    }
    StoreError::Backend(e.to_string())
}

/// `"name"`, with quotes doubled: the schema is configuration, not SQL.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_quotes_identifiers() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
