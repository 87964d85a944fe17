//! The profile's `kubernetes:` section, parsed by a pass of its own over the profile text.
//!
//! Serde cannot tell which class a key belongs to when it reports an unknown key (both classes
//! take `existing` and `file`), nor read a file relative to the profile; so the class keys are
//! captured with their lines and checked here, and files are read after parsing.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::{
    ClassSource, CloneClasses, Issues, KubernetesSettings, read_snapshot_class, read_storage_class,
};
use crate::profile::driver::{ProfileError, parse_strict};

/// Only `kubernetes:`; the first pass has already checked every other key.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    kubernetes: Option<Section>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Section {
    storage_class: Option<Spanned<ClassRef>>,
    snapshot_class: Option<Spanned<ClassRef>>,
    pod_image: Option<String>,
    clone_classes: CloneClasses,
}

/// A key of a class mapping, with its line.
struct Key {
    value: String,
    line: u64,
}

/// `{existing: NAME}` or `{file: PATH}`, as written.
#[derive(Default)]
struct ClassRef {
    existing: Option<Key>,
    file: Option<Key>,
    /// The first key that is neither, reported once the section knows its name.
    unknown: Option<Key>,
}

const CLASS_KEYS: &[&str] = &["existing", "file"];

impl<'de> Deserialize<'de> for ClassRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClassRefVisitor)
    }
}

struct ClassRefVisitor;

impl<'de> Visitor<'de> for ClassRefVisitor {
    type Value = ClassRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with `existing: CLASS` or `file: PATH`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClassRef, A::Error> {
        let mut class = ClassRef::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let line = key.referenced.line();
            let slot = match key.value.as_str() {
                "existing" => &mut class.existing,
                "file" => &mut class.file,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    class.unknown.get_or_insert(Key {
                        value: key.value,
                        line,
                    });
                    continue;
                }
            };
            *slot = Some(Key {
                value: map.next_value::<String>()?,
                line,
            });
        }
        Ok(class)
    }
}

/// Reads `kubernetes:` from the profile text; class files are resolved from `base` (the
/// profile's directory, or "" for the working directory).
pub(crate) fn parse_section(
    text: &str,
    origin: &str,
    base: &Path,
) -> Result<KubernetesSettings, ProfileError> {
    let doc: Document = parse_strict(text, origin)?;
    let section = doc.kubernetes.unwrap_or_default();
    let ctx = Ctx { origin, base };
    Ok(KubernetesSettings {
        storage_class: ctx.source(
            section.storage_class,
            "kubernetes.storage_class",
            |text, at| read_storage_class(text, at, Issues::Fail),
        )?,
        snapshot_class: ctx.source(
            section.snapshot_class,
            "kubernetes.snapshot_class",
            |text, at| read_snapshot_class(text, at, Issues::Fail),
        )?,
        pod_image: section.pod_image,
        clone_classes: section.clone_classes,
    })
}

struct Ctx<'a> {
    origin: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn source<S>(
        &self,
        raw: Option<Spanned<ClassRef>>,
        field: &'static str,
        read: impl Fn(&str, &str) -> Result<S, ProfileError>,
    ) -> Result<ClassSource<S>, ProfileError> {
        let Some(raw) = raw else {
            return Ok(ClassSource::Created);
        };
        let class = raw.value;
        if let Some(k) = class.unknown {
            return Err(ProfileError::UnknownKey {
                origin: self.origin.to_owned(),
                line: k.line,
                key: k.value,
                section: field,
                expected: CLASS_KEYS.join(", "),
            });
        }
        match (class.existing, class.file) {
            // The later of the two keys is the one to remove.
            (Some(existing), Some(file)) => Err(self.invalid_at(
                field,
                existing.line.max(file.line),
                "give either existing or file, not both",
            )),
            (Some(existing), None) => Ok(ClassSource::Existing(existing.value)),
            (None, Some(file)) if file.value.trim().is_empty() => {
                Err(self.invalid_at(field, file.line, "file must not be empty"))
            }
            (None, Some(file)) => self.read_file(field, file, read).map(ClassSource::File),
            (None, None) => Err(self.invalid_at(
                field,
                raw.referenced.line(),
                "give existing or file, or leave the key out to let the run create a class",
            )),
        }
    }

    fn read_file<S>(
        &self,
        field: &str,
        file: Key,
        read: impl Fn(&str, &str) -> Result<S, ProfileError>,
    ) -> Result<S, ProfileError> {
        // Relative to the profile, like secrets_file, so a profile and its manifests move together.
        let path = self.base.join(&file.value);
        let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::ClassFile {
            origin: format!("{}:{}", self.origin, file.line),
            field: format!("{field}.file"),
            path: path.clone(),
            source,
        })?;
        read(&text, &path.display().to_string())
    }

    fn invalid_at(&self, field: &str, line: u64, reason: &str) -> ProfileError {
        ProfileError::InvalidAt {
            origin: self.origin.to_owned(),
            line,
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }
}
