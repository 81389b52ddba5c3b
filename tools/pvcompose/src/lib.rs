//! `pvcompose`: builds Pantavisor revisions (containers, BSP, pvroot) and
//! checks them. The Yocto classes and `pvr` call this library or its binary.

pub mod check;
