//! `named_enum!`: a fieldless enum whose variants each carry a number and a name, with the
//! list written once. It gives the enum (those discriminants, `repr` of the given integer),
//! `ALL` in declaration order, `name()` and `from_repr()`, instead of each enum keeping
//! its variant list three or four times (declaration, `ALL`, name `match`, decode `match`)
//! in step by hand.
//!
//! Not for enums of the C ABI: cbindgen reads plain declarations only.

/// `named_enum! { /// doc  pub enum Kind: u8 { /// doc  A = 0 => "a", B = 1 => "b", } }`
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];

            /// The variant's name (in snapshots, metric labels and messages).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant numbered `v`; `None` for a number no variant has.
            pub fn from_repr(v: $repr) -> Option<$name> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
