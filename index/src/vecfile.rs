//! Readers for vector files: NumPy `.npy` (float32, C order, 2-D) and `.fvecs`.

use std::path::Path;

/// A row-major matrix of vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    pub dim: usize,
    pub rows: Vec<Vec<f32>>,
}

/// Reads `path` by extension: `.npy` or `.fvecs`.
pub fn read_vectors(path: &Path) -> Result<Vectors, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let parsed = match ext {
        "npy" => parse_npy(&bytes),
        "fvecs" => parse_fvecs(&bytes),
        other => Err(format!(
            "unknown vector file type `.{other}` (expected .npy or .fvecs)"
        )),
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a NumPy v1/v2/v3 array of little-endian float32 with shape (n, d).
pub fn parse_npy(bytes: &[u8]) -> Result<Vectors, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated .npy header")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!(
            "only little-endian float32 ('<f4') is supported, header: {header}"
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in .npy header")?;
    let dims: Vec<usize> = shape
        .trim()
        .trim_start_matches('(')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad shape {shape}"))
        })
        .collect::<Result<_, _>>()?;
    let [n, dim] = dims[..] else {
        return Err(format!("expected a 2-D array, shape is ({shape})"));
    };
    let data = &bytes[start + header_len..];
    if data.len() != n * dim * 4 {
        return Err(format!(
            "expected {} data bytes for shape ({n}, {dim}), found {}",
            n * dim * 4,
            data.len()
        ));
    }
    let rows = data
        .chunks_exact(dim * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect();
    Ok(Vectors { dim, rows })
}

/// Parses `.fvecs`: each vector is an i32 dimension followed by that many f32.
pub fn parse_fvecs(bytes: &[u8]) -> Result<Vectors, String> {
    let mut rows = Vec::new();
    let mut at = 0;
    let mut dim = None;
    while at < bytes.len() {
        let d = bytes.get(at..at + 4).ok_or("truncated record header")?;
        let d = i32::from_le_bytes(d.try_into().unwrap());
        let d = usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?;
        if *dim.get_or_insert(d) != d {
            return Err(format!(
                "record {} has {d} dimensions, the first had {}",
                rows.len(),
                dim.unwrap()
            ));
        }
        let body = bytes
            .get(at + 4..at + 4 + d * 4)
            .ok_or("truncated vector")?;
        rows.push(
            body.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        );
        at += 4 + d * 4;
    }
    Ok(Vectors {
        dim: dim.unwrap_or(0),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_npy_and_fvecs() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend((header.len() as u16).to_le_bytes());
        npy.extend(header.as_bytes());
        let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        npy.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let parsed = parse_npy(&npy).unwrap();
        assert_eq!(parsed.rows, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);

        let mut fvecs = Vec::new();
        for row in values.chunks(3) {
            fvecs.extend(3i32.to_le_bytes());
            fvecs.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        }
        assert_eq!(parse_fvecs(&fvecs).unwrap(), parsed);
        assert!(parse_fvecs(&fvecs[..fvecs.len() - 1]).is_err());
        assert!(parse_npy(&npy[..npy.len() - 4]).is_err());
    }
}
