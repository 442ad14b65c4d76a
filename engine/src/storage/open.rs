//! Opening a store: the LMDB environment, its tables, and the checks that the directory
//! holds this node's data of this cluster in a known format.

use super::*;

pub(super) fn check_same_cluster(
    path: &Path,
    stored: &ClusterSettings,
    requested: &ClusterSettings,
) -> Result<(), StoreError> {
    let mismatch =
        |setting: &'static str, stored: String, requested: String| StoreError::SettingMismatch {
            path: path.to_path_buf(),
            setting,
            stored,
            requested,
        };
    if stored.cluster_id != requested.cluster_id {
        return Err(StoreError::OtherCluster {
            path: path.to_path_buf(),
            stored: stored.id_hex(),
            requested: requested.id_hex(),
        });
    }
    if stored.partitions != requested.partitions {
        return Err(mismatch(
            "partitions",
            stored.partitions.to_string(),
            requested.partitions.to_string(),
        ));
    }
    if stored.replication_factor != requested.replication_factor {
        return Err(mismatch(
            "replication-factor",
            stored.replication_factor.to_string(),
            requested.replication_factor.to_string(),
        ));
    }
    Ok(())
}

pub(super) fn open_env(dir: &Path, options: &StoreOptions) -> Result<Env<WithoutTls>, StoreError> {
    let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
    env_options.map_size(options.map_size_bytes).max_dbs(8);
    if !options.durable {
        // SAFETY: NO_SYNC only drops the fsync at commit; it cannot corrupt the map.
        #[allow(unsafe_code)]
        unsafe {
            env_options.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: the directory is locked for this process (LOCK above), so no other Vergent
    // process maps these files, and nothing in Vergent writes them except through LMDB.
    #[allow(unsafe_code)]
    let env = unsafe { env_options.open(dir) };
    env.map_err(|e| match e {
        heed::Error::Mdb(heed::MdbError::Invalid) => StoreError::Corrupt {
            what: "data directory",
            detail: format!("{} does not hold an LMDB environment", dir.display()),
        },
        other => StoreError::lmdb("opening the environment")(other),
    })
}

/// Opens the tables of an existing store after checking it is ours and of a known
/// format, or creates them in a new one.
pub(super) fn open_tables(
    env: &Env<WithoutTls>,
    dir: &Path,
    options: &StoreOptions,
) -> Result<Tables, StoreError> {
    let existing = {
        let rtxn = env
            .read_txn()
            .map_err(StoreError::lmdb("starting a read transaction"))?;
        let meta: Option<Database<Str, Bytes>> = env
            .open_database(&rtxn, Some("meta"))
            .map_err(StoreError::lmdb("opening the meta table"))?;
        if let Some(meta) = &meta {
            meta::check_existing(meta, &rtxn, dir, &options.node_name)?;
        }
        meta.is_some()
    };
    let mut wtxn = env
        .write_txn()
        .map_err(StoreError::lmdb("starting a write transaction"))?;
    let meta: Database<Str, Bytes> = env
        .create_database(&mut wtxn, Some("meta"))
        .map_err(StoreError::lmdb("creating the meta table"))?;
    let data = env
        .create_database(&mut wtxn, Some("data"))
        .map_err(StoreError::lmdb("creating the data table"))?;
    let hints = env
        .create_database(&mut wtxn, Some("hints"))
        .map_err(StoreError::lmdb("creating the hints table"))?;
    let members = env
        .create_database(&mut wtxn, Some("members"))
        .map_err(StoreError::lmdb("creating the members table"))?;
    let promises = env
        .create_database(&mut wtxn, Some("promises"))
        .map_err(StoreError::lmdb("creating the promises table"))?;

    if existing {
        upgrade_to_buckets(&meta, &data, &mut wtxn, dir)?;
    } else {
        meta.put(&mut wtxn, meta::FORMAT, &FORMAT_VERSION.to_be_bytes())
            .map_err(StoreError::lmdb("writing meta"))?;
        meta.put(&mut wtxn, meta::NODE_NAME, options.node_name.as_bytes())
            .map_err(StoreError::lmdb("writing meta"))?;
    }
    wtxn.commit()
        .map_err(StoreError::lmdb("opening the tables"))?;
    Ok(Tables {
        env: env.clone(),
        data,
        hints,
        promises,
        members,
        meta,
        cluster: Arc::new(OnceLock::new()),
        trees: Arc::new(OnceLock::new()),
        maintain_tree: options.maintain_tree,
        map_size_bytes: options.map_size_bytes,
        dir: dir.to_path_buf(),
        no_space: Arc::new(Mutex::new(None)),
        hints_max: options.hints_max,
        hint_state: Arc::new(Mutex::new(HintState::default())),
        changes: broadcast::channel(CHANGES_BUFFER_MAX).0,
    })
}

/// A directory of format 1 (before buckets) has the same layout: every key it holds is
/// a key of `default`, as `default`'s are stored. It is taken as format 2 once it is
/// checked that no key looks like another bucket's; one that does is refused with the
/// count and the first.
fn upgrade_to_buckets(
    meta: &Database<Str, Bytes>,
    data: &Database<Bytes, Bytes>,
    wtxn: &mut RwTxn<'_>,
    dir: &Path,
) -> Result<(), StoreError> {
    let format = meta
        .get(wtxn, meta::FORMAT)
        .map_err(StoreError::lmdb("reading meta"))?
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes);
    if format != Some(meta::FORMAT_BEFORE_BUCKETS) {
        return Ok(());
    }
    let mut count = 0u64;
    let mut example = None;
    for row in data
        .iter(wtxn)
        .map_err(StoreError::lmdb("reading the data table"))?
    {
        let (dkey, _) = row.map_err(StoreError::lmdb("reading the data table"))?;
        if let Some(key) = user_key(dkey)
            && key.starts_with(&crate::buckets::BUCKET_KEY_PREFIX)
        {
            count += 1;
            example.get_or_insert_with(|| key.escape_ascii().to_string());
        }
    }
    if let Some(example) = example {
        return Err(StoreError::KeysLikeBuckets {
            path: dir.to_path_buf(),
            count,
            example,
        });
    }
    meta.put(wtxn, meta::FORMAT, &FORMAT_VERSION.to_be_bytes())
        .map_err(StoreError::lmdb("writing meta"))
}
