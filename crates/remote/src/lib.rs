//! Runs in S3-compatible object storage: a run whose `[output] dir` is `s3://bucket/prefix`
//! works in a local cache of that prefix and keeps the bucket in step with it, so that
//! data scientists query the tables where they are (polars, pyarrow, DuckDB) and shards on
//! different machines meet there.
//!
//! - [`Remote::pull`] brings the objects that changed since the last sync into the cache
//!   (by ETag), each through a temporary file renamed into place;
//! - [`Remote::push`] sends the files that changed: first it deletes the remote manifest of a
//!   table whose data changed, then it uploads data files (multipart above
//!   [`MULTIPART_BYTES`]: an object appears only whole), then the manifests, so a reader that
//!   sees a manifest sees the data it vouches for; files removed from the cache since they were
//!   synced are deleted remotely (gathered shard parts);
//! - [`Remote::create`] is a create-only put (`If-None-Match: *`), for shard commits.
//!
//! Endpoint, region and credentials come from the standard AWS environment variables
//! (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, ...; `AWS_ALLOW_HTTP=true` for a plain-HTTP server). The cache is
//! `$HELIXLAB_CACHE/<bucket>/<prefix>` (default `~/.cache/helixlab`): give it the same path
//! on every node, since manifests name their inputs by path.
//!
//! A key design decision is the cache rather than streaming every read and write through the
//! object store: stages keep reading and writing files (memory maps, streaming Parquet
//! writers, atomic renames), and what crosses the network is whole, verified tables.
//!
//! Not here: what a table or a shard is (helixlab_store), which stages run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

/// Files above this size go up as multipart uploads.
pub const MULTIPART_BYTES: u64 = 16 << 20;

/// The sync record in the cache, beside the run's files.
const STATE: &str = ".helixlab-sync.json";

/// Errors of object storage.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not `s3://bucket[/prefix]`.
    #[error("{url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The object store failed.
    #[error("{url}: {message}")]
    Store {
        /// The object (or prefix) URL.
        url: String,
        /// The cause, on one line (the server's error code first when it sent one).
        message: String,
    },
    /// The object is not there.
    #[error("{url}: no such object")]
    NotFound {
        /// The object URL.
        url: String,
    },
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, RemoteError>;

impl RemoteError {
    /// Whether the object was not there.
    pub fn not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }
}

/// `e` on one line: object_store's errors carry their whole chain and the server's XML body,
/// which would otherwise fill a screen; the S3 error code and message lead.
fn one_line(e: &object_store::Error) -> String {
    let text = e.to_string();
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{t}>"))? + start;
        Some(
            text[start..end]
                .trim_start_matches("<![CDATA[")
                .trim_end_matches("]]>")
                .to_string(),
        )
    };
    let flat: String = text
        .split('<')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let flat: String = flat.chars().take(300).collect();
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message} ({flat})"),
        _ => flat,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RemoteError + '_ {
    move |source| RemoteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` names object storage.
pub fn is_remote(dir: &str) -> bool {
    dir.starts_with("s3://")
}

/// What the cache knew of one object at its last sync.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Synced {
    e_tag: Option<String>,
    size: u64,
    mtime_ns: i128,
}

/// A prefix of a bucket and its local cache.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
    bucket: String,
    prefix: String,
    cache: PathBuf,
    rt: tokio::runtime::Runtime,
}

fn local_stamp(path: &Path) -> Option<(u64, i128)> {
    let m = std::fs::metadata(path).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((m.len(), t.as_nanos() as i128))
}

/// Whether a relative path is a manifest (uploaded after the data it vouches for).
fn is_manifest(rel: &str) -> bool {
    rel.ends_with(".manifest.json") || rel.ends_with("/_manifest.json")
}

/// The manifest of a data file, when it is a table's (`x.parquet` -> `x.manifest.json`;
/// `.../part-0.parquet` of a partition -> `.../_manifest.json`).
fn manifest_of(rel: &str) -> Option<String> {
    let stem = rel.strip_suffix(".parquet")?;
    if rel.ends_with("/part-0.parquet") && rel.contains('=') {
        let dir = &rel[..rel.len() - "/part-0.parquet".len()];
        return Some(format!("{dir}/_manifest.json"));
    }
    Some(format!("{stem}.manifest.json"))
}

impl Remote {
    /// The prefix `url` (`s3://bucket/prefix`), configured from the environment.
    pub fn open(url: &str) -> Result<Remote> {
        let bad = |message: &str| RemoteError::Url {
            url: url.into(),
            message: message.into(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(bad("the prefix may not contain . or .."));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // The variable the AWS CLI and SDKs read (object_store reads AWS_ENDPOINT).
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| RemoteError::Store {
            url: url.into(),
            message: one_line(&e),
        })?;
        let root = std::env::var_os("HELIXLAB_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/helixlab")))
            .unwrap_or_else(|| PathBuf::from(".helixlab-cache"));
        let cache = root.join(bucket).join(&prefix);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&cache))?;
        Ok(Remote {
            store: Arc::new(store),
            url: url.trim_end_matches('/').into(),
            bucket: bucket.into(),
            prefix,
            cache,
            rt,
        })
    }

    /// The local cache of the prefix.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The URL of the object `rel` of the prefix.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    fn err(&self, rel: &str) -> impl FnOnce(object_store::Error) -> RemoteError + '_ {
        let url = self.url_of(rel);
        move |e| match e {
            object_store::Error::NotFound { .. } => RemoteError::NotFound { url },
            e => RemoteError::Store {
                url,
                message: one_line(&e),
            },
        }
    }

    fn state(&self) -> BTreeMap<String, Synced> {
        std::fs::read_to_string(self.cache.join(STATE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save_state(&self, state: &BTreeMap<String, Synced>) -> Result<()> {
        let path = self.cache.join(STATE);
        std::fs::create_dir_all(&self.cache).map_err(io(&self.cache))?;
        let tmp = self
            .cache
            .join(format!("{STATE}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).expect("serialises"))
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Every object under the prefix: relative path -> (size, ETag).
    fn list(&self) -> Result<BTreeMap<String, (u64, Option<String>)>> {
        let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(prefix.as_ref()).try_collect())
            .map_err(self.err(""))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((rel, (m.size, m.e_tag)))
            })
            .collect())
    }

    /// Downloads the objects `wanted` (by relative path) that changed since the last sync;
    /// returns how many came down.
    pub fn pull(&self, wanted: &dyn Fn(&str) -> bool) -> Result<usize> {
        let mut state = self.state();
        let mut n = 0;
        for (rel, (size, e_tag)) in self.list()? {
            if !wanted(&rel) {
                continue;
            }
            let path = self.cache.join(&rel);
            let known = state.get(&rel);
            let unchanged = known.is_some_and(|s| {
                s.e_tag == e_tag && local_stamp(&path) == Some((s.size, s.mtime_ns))
            });
            if unchanged {
                continue;
            }
            // Listed, then removed before it could be read (a losing shard attempt's part):
            // nothing to fetch.
            if self
                .download(&self.key(&rel), &rel, &path)
                .is_err_and(|e| e.not_found())
            {
                continue;
            }
            let (lsize, mtime_ns) = local_stamp(&path).unwrap_or((size, 0));
            state.insert(
                rel,
                Synced {
                    e_tag,
                    size: lsize,
                    mtime_ns,
                },
            );
            n += 1;
        }
        self.save_state(&state)?;
        Ok(n)
    }

    /// Streams the object `key` to `path` through a temporary file renamed into place (a
    /// model's weights never sit in memory whole).
    fn download(&self, key: &Key, rel: &str, path: &Path) -> Result<()> {
        let dir = path.parent().expect("under the cache");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".pull-{}", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let fetched = self.rt.block_on(async {
            let mut stream = self
                .store
                .get(key)
                .await
                .map_err(self.err(rel))?
                .into_stream();
            while let Some(chunk) = stream.try_next().await.map_err(self.err(rel))? {
                std::io::Write::write_all(&mut file, &chunk).map_err(io(&tmp))?;
            }
            Ok::<(), RemoteError>(())
        });
        drop(file);
        if let Err(e) = fetched {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// A read-only input (a model directory, or one GGUF file) in the cache: every object
    /// under the prefix, or the one object the URL names; returns its local path.
    pub fn pull_input(&self) -> Result<PathBuf> {
        if self.pull(&|_| true)? > 0 || !self.list()?.is_empty() {
            return Ok(self.cache.clone());
        }
        let key = Key::from(self.prefix.as_str());
        let head = self
            .rt
            .block_on(self.store.head(&key))
            .map_err(self.err(""))?;
        let fresh = std::fs::metadata(&self.cache).is_ok_and(|m| m.len() == head.size);
        if !fresh {
            self.download(&key, "", &self.cache)?;
        }
        Ok(self.cache.clone())
    }

    /// Uploads the cache's files that changed since the last sync (data, then manifests) and
    /// deletes the objects whose files were removed; files and directories whose names start
    /// with `.` (temporaries, locks, a shard's private work) and shard commits (which
    /// [`Remote::create`] puts) stay local. Returns (uploaded, deleted).
    pub fn push(&self) -> Result<(usize, usize)> {
        let mut state = self.state();
        let mut changed = Vec::new();
        for rel in local_files(&self.cache)? {
            if rel.ends_with(".commit.json") {
                continue;
            }
            let stamp = local_stamp(&self.cache.join(&rel));
            let known = state.get(&rel).map(|s| (s.size, s.mtime_ns));
            if stamp.is_some() && known != stamp {
                changed.push(rel);
            }
        }
        // A table being replaced: its old manifest goes before its new data (and goes up
        // again after it).
        let replaced: Vec<String> = changed
            .iter()
            .filter(|rel| !is_manifest(rel))
            .filter_map(|rel| manifest_of(rel))
            .filter(|m| state.contains_key(m))
            .collect();
        for m in replaced {
            self.delete(&m)?;
            state.remove(&m);
            if self.cache.join(&m).exists() && !changed.contains(&m) {
                changed.push(m);
            }
        }
        changed.sort_by_key(|rel| is_manifest(rel));
        for rel in &changed {
            let path = self.cache.join(rel);
            let e_tag = self.upload(rel, &path)?;
            let (size, mtime_ns) = local_stamp(&path).unwrap_or_default();
            state.insert(
                rel.clone(),
                Synced {
                    e_tag,
                    size,
                    mtime_ns,
                },
            );
        }
        let gone: Vec<String> = state
            .keys()
            .filter(|rel| !self.cache.join(rel).exists())
            .cloned()
            .collect();
        for rel in &gone {
            self.delete(rel)?;
            state.remove(rel);
        }
        self.save_state(&state)?;
        Ok((changed.len(), gone.len()))
    }

    /// Uploads one file: one put, or a multipart upload above [`MULTIPART_BYTES`].
    fn upload(&self, rel: &str, path: &Path) -> Result<Option<String>> {
        let size = std::fs::metadata(path).map_err(io(path))?.len();
        let key = self.key(rel);
        if size <= MULTIPART_BYTES {
            let bytes = std::fs::read(path).map_err(io(path))?;
            let r = self
                .rt
                .block_on(self.store.put(&key, PutPayload::from(bytes)))
                .map_err(self.err(rel))?;
            return Ok(r.e_tag);
        }
        self.rt.block_on(async {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(self.err(rel))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
            let mut f = std::fs::File::open(path).map_err(io(path))?;
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(io(path))?;
                if n == 0 {
                    break;
                }
                w.wait_for_capacity(4).await.map_err(self.err(rel))?;
                w.write(&buf[..n]);
            }
            let r = w.finish().await.map_err(self.err(rel))?;
            Ok(r.e_tag)
        })
    }

    /// Deletes the object `rel` (there or not).
    fn delete(&self, rel: &str) -> Result<()> {
        match self.rt.block_on(self.store.delete(&self.key(rel))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// Puts `bytes` at `rel` only if no object has that name: `false` when one does.
    pub fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.rt.block_on(
            self.store
                .put_opts(&self.key(rel), PutPayload::from(bytes), opts),
        ) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// Whether the object `rel` exists.
    pub fn exists(&self, rel: &str) -> Result<bool> {
        match self.rt.block_on(self.store.head(&self.key(rel))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// Files under `dir`, relative, skipping names that start with `.`.
fn local_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_safe_prefix() {
        std::env::set_var("HELIXLAB_CACHE", "/tmp/helixlab-cache-test");
        let r = Remote::open("s3://b/runs/toy/").unwrap();
        assert_eq!(r.cache(), Path::new("/tmp/helixlab-cache-test/b/runs/toy"));
        assert_eq!(
            r.url_of("problems.parquet"),
            "s3://b/runs/toy/problems.parquet"
        );
        for bad in ["s3://", "gs://b/x", "s3://b/../x"] {
            assert!(Remote::open(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_pair_with_their_data() {
        assert_eq!(
            manifest_of("problems.parquet").as_deref(),
            Some("problems.manifest.json")
        );
        assert_eq!(
            manifest_of("activations/site=x/layer=0/part-0.parquet").as_deref(),
            Some("activations/site=x/layer=0/_manifest.json")
        );
        assert!(is_manifest("activations/site=x/layer=0/_manifest.json"));
        assert!(!is_manifest("problems.parquet"));
    }
}
