use super::*;
use sha2::{Digest, Sha256};
use std::fs::FileTimes;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

fn setup() -> (TempDir, ArtifactStore) {
    let data = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(data.path()).unwrap();
    let store = ArtifactStore::open(data.path(), keyring).unwrap();
    (data, store)
}

/// Distinct, recognisable code of `len` bytes.
fn code(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn account_dir(data: &TempDir, account: &str) -> PathBuf {
    data.path().join(DIR).join(account)
}

fn hdr(data: &TempDir, account: &str, id: &str) -> PathBuf {
    account_dir(data, account).join(format!("{id}.hdr"))
}

/// The blob files of `id`.
fn blobs(data: &TempDir, account: &str, id: &str) -> Vec<PathBuf> {
    let dir = account_dir(data, account);
    file_names(&dir)
        .unwrap()
        .into_iter()
        .filter(|n| blob_owner(n) == Some(id))
        .map(|n| dir.join(n))
        .collect()
}

fn blob(data: &TempDir, account: &str, id: &str) -> PathBuf {
    let mut all = blobs(data, account, id);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

/// Applies `change` to a file, runs `check`, and restores the file.
fn with_changed(path: &Path, change: impl FnOnce(&mut Vec<u8>), check: impl FnOnce()) {
    let original = fs::read(path).unwrap();
    let mut changed = original.clone();
    change(&mut changed);
    fs::write(path, &changed).unwrap();
    check();
    fs::write(path, &original).unwrap();
}

/// Recomputes a header's trailing checksum, as someone who knows the format would.
fn reseal(header: &mut [u8]) {
    let body = header.len() - 32;
    let digest = Sha256::digest(&header[..body]);
    header[body..].copy_from_slice(&digest);
}

#[track_caller]
fn assert_tampered(result: Result<Vec<u8>, ArtifactError>, expected_reason: &str) {
    match result {
        Err(ArtifactError::Tampered { reason, .. }) => {
            assert!(reason.contains(expected_reason), "{reason}")
        }
        other => panic!("expected Tampered ({expected_reason}), got {other:?}"),
    }
}

#[test]
fn round_trips_and_survives_reopening() {
    let (data, store) = setup();
    let big = code(1, 1 << 20);
    let stored = store.put("111122223333", "fn-a", &big).unwrap();
    assert_eq!(stored.size, big.len() as u64);
    assert_eq!(stored.account, "111122223333");
    assert_eq!(stored.artifact_id, "fn-a");
    let active = Keyring::load_or_create(data.path()).unwrap();
    assert_eq!(stored.master_key_id, active.active().id());
    store.put("111122223333", "empty", b"").unwrap();
    // The same id in another account is another artifact.
    store.put("444455556666", "fn-a", b"other").unwrap();

    assert_eq!(store.get("111122223333", "fn-a").unwrap(), big);
    assert_eq!(store.get("111122223333", "empty").unwrap(), b"");
    assert_eq!(store.get("444455556666", "fn-a").unwrap(), b"other");

    // What is on disk is ciphertext, private to the owner.
    let blob_path = blob(&data, "111122223333", "fn-a");
    let on_disk = fs::read(&blob_path).unwrap();
    assert_eq!(on_disk.len(), big.len() + 16);
    assert!(!on_disk.windows(64).any(|w| w == &big[1000..1064]));
    for path in [&blob_path, &hdr(&data, "111122223333", "fn-a")] {
        assert_eq!(
            fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    drop(store);
    let keyring = Keyring::load_or_create(data.path()).unwrap();
    let store = ArtifactStore::open(data.path(), keyring).unwrap();
    assert_eq!(store.get("111122223333", "fn-a").unwrap(), big);
    assert_eq!(store.get("444455556666", "fn-a").unwrap(), b"other");
}

#[test]
fn missing_artifacts_and_bad_names() {
    let (_data, store) = setup();
    store.put("acct", "present", b"x").unwrap();
    for (account, id) in [("acct", "absent"), ("nobody", "present")] {
        assert!(matches!(
            store.get(account, id),
            Err(ArtifactError::NotFound { .. })
        ));
    }
    assert!(matches!(
        store.delete("acct", "absent"),
        Err(ArtifactError::NotFound { .. })
    ));
    for (account, id) in [
        ("..", "x"),
        ("acct", "../acct/present"),
        ("a/b", "x"),
        ("acct", "x.hdr"),
    ] {
        assert!(matches!(
            store.put(account, id, b"x"),
            Err(ArtifactError::InvalidName(_))
        ));
        assert!(matches!(
            store.get(account, id),
            Err(ArtifactError::InvalidName(_))
        ));
    }
}

#[test]
fn overwriting_and_deleting_leave_no_blob_behind() {
    let (data, store) = setup();
    store.put("acct", "fn", b"version 1").unwrap();
    let first = blob(&data, "acct", "fn");
    store.put("acct", "fn", b"version 2").unwrap();
    assert_eq!(store.get("acct", "fn").unwrap(), b"version 2");
    assert_ne!(blob(&data, "acct", "fn"), first);
    store.put("acct", "fn2", b"stays").unwrap();
    store.delete("acct", "fn").unwrap();
    assert!(matches!(
        store.get("acct", "fn"),
        Err(ArtifactError::NotFound { .. })
    ));
    assert!(blobs(&data, "acct", "fn").is_empty());
    assert!(!hdr(&data, "acct", "fn").exists());
    assert_eq!(store.get("acct", "fn2").unwrap(), b"stays");
}

#[test]
fn a_flipped_byte_anywhere_is_refused_and_contained() {
    let (data, store) = setup();
    let (a, b) = (code(1, 4096), code(2, 4096));
    store.put("acct", "a", &a).unwrap();
    store.put("acct", "b", &b).unwrap();
    let other_ok = || assert_eq!(store.get("acct", "b").unwrap(), b);

    let blob_path = blob(&data, "acct", "a");
    let len = a.len() + 16;
    // First byte, middle, last ciphertext byte, first and last tag byte.
    for offset in [0, 1, len / 2, len - 17, len - 16, len - 1] {
        with_changed(
            &blob_path,
            |f| f[offset] ^= 0x01,
            || {
                assert_tampered(store.get("acct", "a"), "blob does not authenticate");
                other_ok();
            },
        );
    }
    with_changed(
        &blob_path,
        |f| f.truncate(len - 1),
        || {
            assert_tampered(store.get("acct", "a"), "wrong length");
        },
    );
    with_changed(
        &blob_path,
        |f| f.push(0),
        || {
            assert_tampered(store.get("acct", "a"), "wrong length");
        },
    );

    let hdr_path = hdr(&data, "acct", "a");
    let hdr_len = fs::read(&hdr_path).unwrap().len();
    for offset in 0..hdr_len {
        with_changed(
            &hdr_path,
            |f| f[offset] ^= 0x10,
            || {
                assert_tampered(store.get("acct", "a"), "");
                other_ok();
            },
        );
    }
    with_changed(
        &hdr_path,
        |f| f.truncate(20),
        || {
            assert_tampered(store.get("acct", "a"), "truncated");
        },
    );

    // Someone who recomputes the checksum still cannot change the wrapped key, its nonce,
    // the blob's nonce or length: the data key no longer unwraps.
    let wrapped = hdr_len - 32 - 48;
    let wrap_nonce = wrapped - 12;
    let length = wrap_nonce - 8;
    let blob_nonce = length - 12;
    for offset in [
        wrapped,
        wrapped + 20,
        hdr_len - 33,
        wrap_nonce,
        length + 7,
        blob_nonce,
    ] {
        with_changed(
            &hdr_path,
            |f| {
                f[offset] ^= 0x01;
                reseal(f);
            },
            || {
                assert_tampered(
                    store.get("acct", "a"),
                    "wrapped data key does not authenticate",
                );
                other_ok();
            },
        );
    }
    // Or point it at another key id: refused as an unknown key.
    with_changed(
        &hdr_path,
        |f| {
            f[13] = if f[13] == b'0' { b'1' } else { b'0' };
            reseal(f);
        },
        || {
            assert!(matches!(
                store.get("acct", "a"),
                Err(ArtifactError::UnknownMasterKey { .. })
            ));
        },
    );

    // A missing blob.
    let saved = fs::read(&blob_path).unwrap();
    fs::remove_file(&blob_path).unwrap();
    assert_tampered(store.get("acct", "a"), "blob is missing");
    fs::write(&blob_path, saved).unwrap();

    // After all that, both are intact again.
    assert_eq!(store.get("acct", "a").unwrap(), a);
    other_ok();
}

#[test]
fn moved_artifacts_are_refused() {
    let (data, store) = setup();
    let (a, b) = (code(1, 1000), code(2, 1000));
    store.put("acct1", "a", &a).unwrap();
    store.put("acct1", "b", &b).unwrap();
    store.put("acct2", "z", b"makes the folder").unwrap();
    let (a_hdr, a_blob) = (hdr(&data, "acct1", "a"), blob(&data, "acct1", "a"));
    let a_blob_name = a_blob.file_name().unwrap().to_str().unwrap().to_owned();
    let generation = a_blob_name.split('.').nth(1).unwrap().to_owned();

    // To another account, same id; to another id, same account.
    for (account, id) in [("acct2", "a"), ("acct1", "c")] {
        let dir = account_dir(&data, account);
        fs::copy(&a_hdr, dir.join(format!("{id}.hdr"))).unwrap();
        fs::copy(&a_blob, dir.join(format!("{id}.{generation}.blob"))).unwrap();
        assert_tampered(
            store.get(account, id),
            "wrapped data key does not authenticate",
        );
    }

    // b's blob swapped in for a's (same length): the header is a's, the blob is not.
    let b_blob = blob(&data, "acct1", "b");
    let saved = fs::read(&a_blob).unwrap();
    fs::copy(&b_blob, &a_blob).unwrap();
    assert_tampered(store.get("acct1", "a"), "blob does not authenticate");
    fs::write(&a_blob, saved).unwrap();
    assert_eq!(store.get("acct1", "a").unwrap(), a);
    assert_eq!(store.get("acct1", "b").unwrap(), b);
}

#[test]
fn rotation_and_rewrap_keep_everything_readable_without_touching_blobs() {
    let data = tempfile::tempdir().unwrap();
    // The service's store, and later a `keys rotate` command's view of the same directory.
    let service =
        ArtifactStore::open(data.path(), Keyring::load_or_create(data.path()).unwrap()).unwrap();
    let ids = ["a", "b", "c"];
    for (i, id) in ids.iter().enumerate() {
        service.put("acct", id, &code(i as u8, 3000)).unwrap();
    }
    let blobs_before: Vec<(PathBuf, Vec<u8>)> = ids
        .iter()
        .map(|id| {
            let path = blob(&data, "acct", id);
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    let headers_before: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| fs::read(hdr(&data, "acct", id)).unwrap())
        .collect();

    let mut keyring = Keyring::load_or_create(data.path()).unwrap();
    let old = keyring.active().id().to_owned();
    let new = keyring.rotate().unwrap().id().to_owned();
    let command = ArtifactStore::open(data.path(), keyring.clone()).unwrap();

    // The service has not reloaded its keyring, yet its next put uses the new key.
    assert_eq!(
        service
            .put("acct", "d", b"after rotation")
            .unwrap()
            .master_key_id,
        new
    );
    // The old key cannot go while it wraps something.
    assert!(matches!(
        command.retire_key(&mut keyring, &old),
        Err(ArtifactError::KeyInUse { count: 3, .. })
    ));

    let report = command.rewrap_all(&keyring).unwrap();
    assert_eq!((report.rewrapped, report.current), (3, 1));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let again = command.rewrap_all(&keyring).unwrap();
    assert_eq!((again.rewrapped, again.current), (0, 4));

    // Blobs are byte for byte what they were, under the same names; headers changed.
    for ((path, bytes), id) in blobs_before.iter().zip(ids) {
        assert_eq!(&blob(&data, "acct", id), path);
        assert_eq!(&fs::read(path).unwrap(), bytes);
    }
    for (before, id) in headers_before.iter().zip(ids) {
        assert_ne!(&fs::read(hdr(&data, "acct", id)).unwrap(), before);
    }

    use base64::Engine;
    let old_key_b64 =
        base64::engine::general_purpose::STANDARD.encode(keyring.get(&old).unwrap().bytes());
    command.retire_key(&mut keyring, &old).unwrap();
    assert!(keyring.get(&old).is_none());
    // Everything decrypts with the new key alone: in the service (its keyring reloads on
    // meeting the new key) and after a restart.
    let restarted =
        ArtifactStore::open(data.path(), Keyring::load_or_create(data.path()).unwrap()).unwrap();
    assert_eq!(
        Keyring::load_or_create(data.path()).unwrap().keys().len(),
        1
    );
    for store in [&service, &command, &restarted] {
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(store.get("acct", id).unwrap(), code(i as u8, 3000));
        }
        assert_eq!(store.get("acct", "d").unwrap(), b"after rotation");
    }

    // A keyring holding only the retired key reads nothing any more.
    let path = data.path().join("old.key");
    fs::write(&path, old_key_b64).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let only_old = Keyring::open(crate::keys::KeySource::File(path)).unwrap();
    let stale = ArtifactStore::open(data.path(), only_old).unwrap();
    assert!(matches!(
        stale.get("acct", "a"),
        Err(ArtifactError::UnknownMasterKey { key_id, .. }) if key_id == new
    ));
}

#[test]
fn retire_refuses_while_a_header_is_unreadable() {
    let (data, store) = setup();
    store.put("acct", "a", b"x").unwrap();
    let mut keyring = Keyring::load_or_create(data.path()).unwrap();
    let old = keyring.active().id().to_owned();
    keyring.rotate().unwrap();
    with_changed(
        &hdr(&data, "acct", "a"),
        |f| f[0] ^= 1,
        || {
            assert!(matches!(
                store.retire_key(&mut keyring, &old),
                Err(ArtifactError::Tampered { .. })
            ));
            let report = store.rewrap_all(&keyring).unwrap();
            assert_eq!(report.failed.len(), 1);
        },
    );
    assert_eq!(keyring.keys().len(), 2);
}

#[test]
fn crash_leftovers_are_never_served_and_cleaned_on_open() {
    let (data, store) = setup();
    store.put("acct", "fn", b"complete version").unwrap();
    let dir = account_dir(&data, "acct");

    // Crash after writing the next version's blob to a temporary file.
    let staged = store.stage("acct", "fn", b"half-written version").unwrap();
    assert!(staged.temp.exists());
    assert_eq!(store.get("acct", "fn").unwrap(), b"complete version");
    // Crash after moving the blob into place, before the header.
    let staged = store.stage("acct", "fn", b"uncommitted version").unwrap();
    let orphan = dir.join(header::blob_name("fn", &staged.generation));
    fs::rename(&staged.temp, &orphan).unwrap();
    assert_eq!(store.get("acct", "fn").unwrap(), b"complete version");
    // A first version that never committed is simply not there.
    let first = store.stage("acct", "new", b"never committed").unwrap();
    fs::rename(
        &first.temp,
        dir.join(header::blob_name("new", &first.generation)),
    )
    .unwrap();
    assert!(matches!(
        store.get("acct", "new"),
        Err(ArtifactError::NotFound { .. })
    ));
    // A torn header write leaves only a temporary file.
    fs::write(
        dir.join(format!("{}torn", atomic::TEMP_PREFIX)),
        b"EMBERART\x01",
    )
    .unwrap();
    assert!(matches!(
        store.get("acct", "new"),
        Err(ArtifactError::NotFound { .. })
    ));

    let temps = || {
        file_names(&dir)
            .unwrap()
            .into_iter()
            .filter(|n| atomic::is_temp(n.as_ref()))
            .count()
    };
    assert_eq!(temps(), 2);
    let keyring = Keyring::load_or_create(data.path()).unwrap();
    let store = ArtifactStore::open(data.path(), keyring.clone()).unwrap();
    // Orphaned blobs go at once; recent temporary files may belong to a write in progress.
    assert!(!orphan.exists());
    assert!(blobs(&data, "acct", "new").is_empty());
    assert_eq!(blobs(&data, "acct", "fn").len(), 1);
    assert_eq!(temps(), 2);
    // Once stale, they go too.
    for name in file_names(&dir).unwrap() {
        if atomic::is_temp(name.as_ref()) {
            let old = SystemTime::now() - 2 * STALE_TEMP;
            let file = File::options().write(true).open(dir.join(name)).unwrap();
            file.set_times(FileTimes::new().set_modified(old)).unwrap();
        }
    }
    drop(store);
    let store = ArtifactStore::open(data.path(), keyring).unwrap();
    assert_eq!(temps(), 0);
    assert_eq!(store.get("acct", "fn").unwrap(), b"complete version");
}

#[test]
fn readers_see_whole_versions_while_a_writer_replaces_them() {
    let (_data, store) = setup();
    let versions: Vec<Vec<u8>> = (0..4).map(|i| code(i, 64 + usize::from(i))).collect();
    store.put("acct", "fn", &versions[0]).unwrap();
    let writing = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..300 {
                store
                    .put("acct", "fn", &versions[i % versions.len()])
                    .unwrap();
            }
            writing.store(false, std::sync::atomic::Ordering::Relaxed);
        });
        let mut reads = 0;
        while writing.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
            let got = store.get("acct", "fn").unwrap();
            assert!(
                versions.contains(&got),
                "a torn read of {} bytes",
                got.len()
            );
            reads += 1;
        }
    });
}

#[test]
fn writers_wait_for_readers_and_readers_for_writers() {
    let (data, store) = setup();
    store.put("acct", "fn", b"version 1").unwrap();
    let lock_path = data.path().join(DIR).join(".lock");
    let header = hdr(&data, "acct", "fn");
    let pause = Duration::from_millis(200);
    std::thread::scope(|s| {
        // A reader (here: another process's) holds the shared lock: a put cannot commit,
        // so the blob the reader is about to open is not removed under it.
        let reader = lock::lock(&lock_path, Mode::Shared).unwrap();
        let before = fs::read(&header).unwrap();
        let put = s.spawn(|| store.put("acct", "fn", b"version 2").unwrap());
        std::thread::sleep(pause);
        assert!(!put.is_finished());
        assert_eq!(fs::read(&header).unwrap(), before);
        drop(reader);
        put.join().unwrap();
        // A writer holds the exclusive lock: a get waits for it.
        let writer = lock::lock(&lock_path, Mode::Exclusive).unwrap();
        let get = s.spawn(|| store.get("acct", "fn").unwrap());
        std::thread::sleep(pause);
        assert!(!get.is_finished());
        drop(writer);
        assert_eq!(get.join().unwrap(), b"version 2");
    });
}
