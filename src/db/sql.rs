//! SQL text shared by the extractors, the loaders and the drills: identifier and literal
//! quoting per dialect, and the column-type mapping that decides how a value is written
//! to CSV. Kept in one place so that backup, restore and the drill's `CREATE TABLE` quote
//! the same way.

use crate::manifest::Column;

/// The SQL dialect of a database URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: double-quoted identifiers.
    Postgres,
    /// MySQL / MariaDB: backquoted identifiers.
    Mysql,
}

impl Dialect {
    /// Quote an identifier for this dialect.
    pub fn ident(self, s: &str) -> String {
        match self {
            Dialect::Postgres => pg_ident(s),
            Dialect::Mysql => my_ident(s),
        }
    }
}

/// Quote a PostgreSQL identifier.
pub fn pg_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a PostgreSQL string literal.
pub fn pg_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `SELECT` list of a table's stored columns.
pub fn pg_select_list(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| pg_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quote a MySQL identifier with backticks.
pub fn my_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Whether a MySQL `COLUMN_TYPE` holds bytes rather than text.
pub fn my_is_binary(ty: &str) -> bool {
    let t = ty.to_ascii_lowercase();
    t.contains("blob")
        || t.starts_with("binary")
        || t.starts_with("varbinary")
        || t.starts_with("bit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(my_ident("a`b"), "`a``b`");
        assert_eq!(Dialect::Mysql.ident("t"), "`t`");
        assert_eq!(Dialect::Postgres.ident("t"), "\"t\"");
    }
}
