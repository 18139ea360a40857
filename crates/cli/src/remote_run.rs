//! A study whose `[output] dir` is `s3://...`: the stage runs on the local cache of the prefix
//! (helixlab_remote), pulled before and pushed after; an `s3://` `[model] dir` is fetched into
//! the cache once (read-only). Local studies pass through untouched.

use anyhow::{Context, Result};
use helixlab_pipeline::Pipeline;
use helixlab_remote::{is_remote, Remote};
use helixlab_store::shard::ShardSet;

/// The study as the stage sees it (its run directory local), and the bucket behind it.
pub struct Workspace {
    /// The study, `[output] dir` pointing at the cache when the run is remote.
    pub p: Pipeline,
    /// The bucket, for a remote run.
    pub remote: Option<Remote>,
}

/// Shard parts are fetched only by the gathering that needs them.
fn is_shard_part(rel: &str) -> bool {
    rel.starts_with("shards/") && rel.ends_with(".parquet")
}

impl Workspace {
    /// Opens the study's run: for `s3://`, pulls what changed (every table and commit, not the
    /// shard parts) into the cache.
    pub fn open(p: &Pipeline) -> Result<Workspace> {
        let mut p = p.clone();
        if is_remote(&p.model.dir) {
            let model = Remote::open(&p.model.dir)
                .with_context(|| format!("{}: [model] dir", p.path.display()))?;
            let local = model
                .pull_input()
                .with_context(|| format!("fetching the model {}", p.model.dir))?;
            p.model.fetched_from = Some(std::mem::replace(
                &mut p.model.dir,
                local.display().to_string(),
            ));
        }
        if !is_remote(&p.output.dir) {
            return Ok(Workspace { p, remote: None });
        }
        let p = &p;
        let remote = Remote::open(&p.output.dir)
            .with_context(|| format!("{}: [output] dir", p.path.display()))?;
        let n = remote
            .pull(&|rel| !is_shard_part(rel))
            .with_context(|| format!("pulling {}", p.output.dir))?;
        if n > 0 {
            eprintln!(
                "{}: {n} object(s) pulled into {}",
                p.output.dir,
                remote.cache().display()
            );
        }
        let mut q = p.clone();
        q.output.dir = remote.cache().display().to_string();
        Ok(Workspace {
            p: q,
            remote: Some(remote),
        })
    }

    /// Pulls a shard set's commits (which shards are in).
    pub fn pull_set_commits(&self, set: &ShardSet) -> Result<()> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        let root = set.relative_root();
        let prefix = format!("{root}/");
        r.pull(&|k| k.starts_with(&prefix) && k.ends_with(".commit.json"))
            .with_context(|| format!("pulling {}", r.url_of(&root)))?;
        Ok(())
    }

    /// Pulls a shard set's commits, then exactly the parts they list (never the parts of an
    /// attempt that lost its commit, which it may be removing).
    pub fn pull_set(&self, set: &ShardSet) -> Result<()> {
        let Some(r) = &self.remote else {
            return Ok(());
        };
        self.pull_set_commits(set)?;
        let root = set.relative_root();
        let context = || format!("pulling {}", r.url_of(&root));
        let mut listed = std::collections::BTreeSet::new();
        for i in 0..set.count() {
            if let Some(c) = set.committed(i)? {
                listed.extend(c.tables.values().map(|t| format!("{root}/{}", t.file)));
            }
        }
        r.pull(&|k| listed.contains(k)).with_context(context)?;
        Ok(())
    }

    /// Sends what the stage wrote (data, then manifests) and removes what it removed.
    pub fn push(&self) -> Result<()> {
        if let Some(r) = &self.remote {
            let (up, gone) = r
                .push()
                .with_context(|| format!("pushing {}", r.url_of("")))?;
            if up + gone > 0 {
                eprintln!(
                    "{}: {up} file(s) uploaded, {gone} removed",
                    r.url_of("").trim_end_matches('/')
                );
            }
        }
        Ok(())
    }
}
