//! Region attribution from a MaxMind country database (GeoLite2-Country or DB-IP country lite,
//! which share the `country.iso_code` layout).

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{Reader, geoip2};

/// An open country database.
pub struct Geoip {
    reader: Reader<Vec<u8>>,
}

impl Geoip {
    /// Opens and checks the database file.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("opening GeoIP database {}: {e}", path.display()))?;
        Ok(Self { reader })
    }

    /// The ISO 3166-1 alpha-2 country of `ip`: where the address is used, else where its block is
    /// registered. `None` when the database has no entry.
    pub fn region(&self, ip: IpAddr) -> Option<[u8; 2]> {
        let record: geoip2::Country<'_> = self.reader.lookup(ip).ok()?;
        let code = record
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| record.registered_country.and_then(|c| c.iso_code))?;
        match code.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => None,
        }
    }
}
