//! Gather helpers with the fallible (`f_`) ops, since the indices come from
//! data.

use tch::{TchError, Tensor};

/// Rows of `table` picked by `indices` (an embedding lookup).
/// `table`: `[rows, d]`, `indices`: `[...]` int64 → `[..., d]`.
pub fn gather_rows(table: &Tensor, indices: &Tensor) -> Result<Tensor, TchError> {
    let mut shape = indices.size();
    shape.push(table.size()[1]);
    table
        .f_index_select(0, &indices.f_flatten(0, -1)?)?
        .f_reshape(shape)
}

/// The entry of the last dimension picked by `indices`, e.g. the
/// log-probability of each target token.
/// `values`: `[..., n]`, `indices`: `[...]` int64 → `[...]`.
pub fn gather_last(values: &Tensor, indices: &Tensor) -> Result<Tensor, TchError> {
    values
        .f_gather(-1, &indices.f_unsqueeze(-1)?, false)?
        .f_squeeze_dim(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn gathers_rows_and_last_entries() {
        let table = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([4, 3]);
        let idx = Tensor::from_slice2(&[[3i64, 0], [1, 1]]);
        let rows = gather_rows(&table, &idx).unwrap();
        assert_eq!(rows.size(), vec![2, 2, 3]);
        assert_eq!(
            Vec::<f32>::try_from(rows.get(0).get(0)).unwrap(),
            vec![9.0, 10.0, 11.0]
        );

        let picked = gather_last(&table, &Tensor::from_slice(&[2i64, 0, 1, 2])).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(picked).unwrap(),
            vec![2.0, 3.0, 7.0, 11.0]
        );
    }

    #[test]
    fn out_of_range_index_is_an_error_not_a_crash() {
        let table = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
        assert!(gather_rows(&table, &Tensor::from_slice(&[4i64])).is_err());
    }
}
