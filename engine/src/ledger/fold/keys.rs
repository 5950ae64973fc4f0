//! The fold's key parts and value codecs: places in the order, accounts,
//! units, amounts, and the `o` row's value. The rows they make up are listed
//! in [`crate::storage::layout`].

use icn_schemas::Did;
use icn_schemas::ledger::{Account, EntryId};

use crate::storage::StorageError;
use crate::storage::layout::OrderRow;

/// Why reading a stored fold row failed.
pub(super) fn corrupt(reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree: crate::storage::layout::LEDGER,
        reason: reason.to_string(),
    }
}

pub(super) fn i64_of(bytes: &[u8]) -> Result<i64, StorageError> {
    <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| corrupt("an amount is not 8 bytes"))
}

pub(super) fn u64_of(bytes: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a number is not 8 bytes"))
}

/// An account as 33 key bytes: `0 ‖ DID` or `1 ‖ 0…0` for the treasury.
pub(super) fn account_key(account: &Account) -> [u8; 33] {
    let mut key = [0u8; 33];
    match account {
        Account::Member(did) => key[1..].copy_from_slice(did.as_bytes()),
        Account::Treasury => key[0] = 1,
    }
    key
}

pub(super) fn account_of(key: &[u8]) -> Result<Account, StorageError> {
    match key.first() {
        Some(0) => Did::from_bytes(&key[1..33])
            .map(Account::Member)
            .map_err(|_| corrupt("an account key is not a DID")),
        Some(1) => Ok(Account::Treasury),
        _ => Err(corrupt("unknown account tag")),
    }
}

/// An `o` row's value: `len (u16 BE) ‖ OrderRow ‖ the entry's encoding`.
pub(super) fn split_order_value(value: &[u8]) -> Result<(OrderRow, &[u8]), StorageError> {
    let len = value
        .get(..2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        .ok_or_else(|| corrupt("an order row is too short"))?;
    let row = value
        .get(2..2 + len)
        .ok_or_else(|| corrupt("an order row is too short"))?;
    let row = OrderRow::decode(row).map_err(corrupt)?;
    Ok((row, &value[2 + len..]))
}

/// The value of an `o` row: [`split_order_value`] reversed.
pub(super) fn order_value(row: &OrderRow, bytes: &[u8]) -> Result<Vec<u8>, StorageError> {
    let encoded = postcard::to_stdvec(row).map_err(corrupt)?;
    let len = u16::try_from(encoded.len()).map_err(|_| corrupt("an order row is too long"))?;
    let mut value = Vec::with_capacity(2 + encoded.len() + bytes.len());
    value.extend_from_slice(&len.to_be_bytes());
    value.extend_from_slice(&encoded);
    value.extend_from_slice(bytes);
    Ok(value)
}

/// `depth ‖ id`: a place in the fold order.
pub(super) fn place(depth: u64, id: &EntryId) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&depth.to_be_bytes());
    key[8..].copy_from_slice(&id.0);
    key
}

/// The place a key ends in.
pub(super) fn place_of(bytes: &[u8]) -> Result<(u64, EntryId), StorageError> {
    let at = bytes
        .len()
        .checked_sub(40)
        .ok_or_else(|| corrupt("a key is too short for a place"))?;
    let depth = u64_of(&bytes[at..at + 8])?;
    let id = <[u8; 32]>::try_from(&bytes[at + 8..]).map_err(|_| corrupt("bad entry id"))?;
    Ok((depth, EntryId(id)))
}

/// A unit followed by more key parts: length-prefixed.
pub(super) fn unit_part(unit: &str) -> Vec<u8> {
    let mut part = Vec::with_capacity(unit.len() + 1);
    part.push(unit.len() as u8);
    part.extend_from_slice(unit.as_bytes());
    part
}
