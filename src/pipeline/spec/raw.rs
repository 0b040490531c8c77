//! The raw shape of a pipeline file: one `*Spec` struct per TOML table, as written.
//!
//! Every table is `deny_unknown_fields`, so a typo is an error rather than a silently
//! ignored key, and values keep their [`Spanned`] position so the checks in the sibling
//! files can point at file, line and column. Nothing here applies defaults or rules.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::support::units::{parse_fraction, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineSpec {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) source: SourceSpec,
    #[serde(default)]
    pub(super) partitions: PartitionsSpec,
    #[serde(default)]
    pub(super) chunking: ChunkingSpec,
    #[serde(default)]
    pub(super) compression: CompressionSpec,
    pub(super) target: TargetSpec,
    #[serde(default)]
    pub(super) upload: UploadSpec,
    #[serde(default)]
    pub(super) verify: VerifySpec,
    #[serde(default)]
    pub(super) retry: RetrySpec,
    #[serde(default)]
    pub(super) lock: LockSpec,
    #[serde(default)]
    pub(super) incremental: IncrementalSpec,
    #[serde(default)]
    pub(super) schedule: Option<ScheduleSpec>,
    #[serde(default)]
    pub(super) alerts: Option<AlertsSpec>,
    #[serde(default)]
    pub(super) freshness: Option<FreshnessSpec>,
    #[serde(default)]
    pub(super) retention: Option<RetentionSpec>,
    #[serde(default)]
    pub(super) lifecycle: Option<LifecycleSpec>,
    #[serde(default)]
    pub(super) immutability: Option<ImmutabilitySpec>,
    #[serde(default)]
    pub(super) encryption: Option<EncryptionSpec>,
    #[serde(default)]
    pub(super) serve: Option<ServeSpec>,
    #[serde(default)]
    pub(super) restore: RestoreSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServeSpec {
    pub(super) handoff: Option<Spanned<String>>,
    pub(super) queue_url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptionSpec {
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) key_env: Option<Spanned<String>>,
    pub(super) passphrase_env: Option<Spanned<String>>,
    pub(super) passphrase_file: Option<Spanned<String>>,
    pub(super) key_vault_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImmutabilitySpec {
    pub(super) days: Option<Spanned<i64>>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) legal_hold: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionSpec {
    pub(super) keep_last: Option<Spanned<i64>>,
    pub(super) keep_hourly: Option<Spanned<i64>>,
    pub(super) keep_daily: Option<Spanned<i64>>,
    pub(super) keep_weekly: Option<Spanned<i64>>,
    pub(super) keep_monthly: Option<Spanned<i64>>,
    pub(super) keep_yearly: Option<Spanned<i64>>,
    pub(super) keep_within: Option<Spanned<String>>,
    pub(super) prune_grace: Option<Spanned<String>>,
    pub(super) auto: Option<bool>,
    pub(super) defer_early_deletion: Option<bool>,
    pub(super) max_unused: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LifecycleSpec {
    pub(super) cool_after_days: Option<Spanned<i64>>,
    pub(super) cold_after_days: Option<Spanned<i64>>,
    pub(super) archive_after_days: Option<Spanned<i64>>,
    pub(super) allow_archive_before_full: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FreshnessSpec {
    pub(super) rpo: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceSpec {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    pub(super) root: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) include: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude: Vec<Spanned<String>>,
    // postgres / mysql
    pub(super) url: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) schemas: Vec<Spanned<String>>,
    pub(super) split_rows: Option<Spanned<i64>>,
    pub(super) chunk_size: Option<Spanned<SizeValue>>,
    // command
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) shell: Option<bool>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    // blob
    pub(super) container: Option<Spanned<String>>,
    pub(super) rehydrate: Option<Spanned<String>>,
    pub(super) server_side_min_size: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreSpec {
    pub(super) strategy: Option<Spanned<String>>,
    pub(super) scratch_url: Option<Spanned<String>>,
    pub(super) jobs: Option<Spanned<i64>>,
    pub(super) fk_check: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tables: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartitionsSpec {
    pub(super) count: Option<Spanned<CountOrAuto>>,
    pub(super) max_parallel: Option<Spanned<CountOrAuto>>,
    pub(super) size: Option<Spanned<SizeValue>>,
    pub(super) max_entries: Option<Spanned<CountOrAuto>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChunkingSpec {
    pub(super) threshold: Option<Spanned<SizeValue>>,
    pub(super) min_size: Option<Spanned<SizeValue>>,
    pub(super) avg_size: Option<Spanned<SizeValue>>,
    pub(super) max_size: Option<Spanned<SizeValue>>,
    pub(super) range_buffer: Option<Spanned<SizeValue>>,
    pub(super) index: Option<Spanned<SizeValue>>,
}

/// A count or the word `"auto"`.
#[derive(Debug, Clone, Copy)]
pub(super) enum CountOrAuto {
    Count(i64),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum AutoWord {
    Auto,
}

impl<'de> Deserialize<'de> for CountOrAuto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CountOrAuto;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CountOrAuto, E> {
                Ok(CountOrAuto::Count(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CountOrAuto, E> {
                Ok(CountOrAuto::Count(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<CountOrAuto, E> {
                Err(E::custom(format!(
                    "expected a whole number or \"auto\", got {f}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CountOrAuto, E> {
                if s.eq_ignore_ascii_case("auto") {
                    Ok(CountOrAuto::Word(AutoWord::Auto))
                } else {
                    Err(E::custom(format!(
                        "expected a whole number or \"auto\", got {s:?}"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompressionSpec {
    pub(super) codec: Option<Spanned<String>>,
    pub(super) level: Option<Spanned<i64>>,
    pub(super) frame_size: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSpec {
    pub(super) url: Spanned<String>,
    pub(super) container: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) tier: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadSpec {
    pub(super) block_size: Option<Spanned<SizeValue>>,
    pub(super) pack_size: Option<Spanned<SizeValue>>,
    pub(super) concurrency: Option<Spanned<i64>>,
    pub(super) channel_capacity: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifySpec {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) sample: Option<Spanned<FractionValue>>,
    pub(super) seed: Option<u64>,
    pub(super) after_backup: Option<bool>,
    pub(super) batch: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrySpec {
    pub(super) attempts: Option<Spanned<i64>>,
    pub(super) initial_backoff: Option<Spanned<String>>,
    pub(super) max_backoff: Option<Spanned<String>>,
    pub(super) budget: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IncrementalSpec {
    pub(super) enabled: Option<bool>,
    pub(super) full_every: Option<Spanned<CountOrDuration>>,
}

/// A count of runs (`7`) or an age (`"7d"`).
#[derive(Debug, Clone)]
pub(super) enum CountOrDuration {
    Count(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for CountOrDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CountOrDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of backups (7) or an age (\"7d\")")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CountOrDuration, E> {
                Ok(CountOrDuration::Count(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CountOrDuration, E> {
                Ok(CountOrDuration::Count(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<CountOrDuration, E> {
                Err(E::custom(format!(
                    "expected a whole number of backups (7) or an age (\"7d\"), got {f}"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CountOrDuration, E> {
                Ok(CountOrDuration::Text(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockSpec {
    pub(super) ttl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleSpec {
    pub(super) cron: Spanned<String>,
    #[serde(default)]
    pub(super) catch_up: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertsSpec {
    #[serde(default)]
    pub(super) webhook: Vec<WebhookSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookSpec {
    pub(super) url: Spanned<String>,
    pub(super) format: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) on: Vec<Spanned<String>>,
}

/// A size written as `"8MiB"`, `"512KiB"`, `"1GB"` or a plain byte count.
#[derive(Debug, Clone, Copy)]
pub(super) struct SizeValue(pub(super) u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"8MiB\" or a whole number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<SizeValue, E> {
                // 0 parses: the key's own range decides whether it means something
                // (`range_buffer = 0`, `index = 0` turn a feature off) or is refused.
                match n {
                    n if n >= 0 => Ok(SizeValue(n as u64)),
                    n => Err(E::custom(format!(
                        "negative sizes are not allowed, got {n} (write e.g. \"8MiB\")"
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<SizeValue, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<SizeValue, E> {
                Err(E::custom(format!(
                    "a size is a whole number of bytes or a string with a unit, got {f} \
                     (write e.g. \"8MiB\", or \"8.5MiB\" for a fraction of a unit)"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SizeValue, E> {
                let t = s.trim();
                let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                let unit = &t[digits.len()..];
                if digits.trim().parse::<f64>().is_ok_and(|n| n == 0.0)
                    && (unit.is_empty() || parse_size(&format!("1{unit}")).is_ok())
                {
                    return Ok(SizeValue(0));
                }
                parse_size(s).map(SizeValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A fraction written as `"10%"`, `0.1` or `"0.1"`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FractionValue(pub(super) f64);

impl<'de> Deserialize<'de> for FractionValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a fraction such as 0.1 or a percentage such as \"10%\"")
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<f64, E> {
                Ok(f)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<f64, E> {
                Ok(n as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<f64, E> {
                Ok(n as f64)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<f64, E> {
                parse_fraction(s).map_err(E::custom)
            }
        }
        let f = d.deserialize_any(V)?;
        if !(f > 0.0 && f <= 1.0) {
            return Err(serde::de::Error::custom(format!(
                "sample must be in (0, 1] or a percentage like \"10%\", got {f}"
            )));
        }
        Ok(FractionValue(f))
    }
}
