pub mod apiserver;
pub mod dns;
