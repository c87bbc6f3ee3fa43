//! A synthetic shop: a category tree with products that have titles, brands, colours,
//! prices and descriptions, generated deterministically from a seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shelf_types::{Item, ItemId};
use time::OffsetDateTime;

/// A leaf of the category tree with what its products are made of.
struct Leaf {
    path: &'static str,
    nouns: &'static [&'static str],
    brands: &'static [&'static str],
    features: &'static [&'static str],
    /// Typical price range (min, max) in the shop's currency.
    price: (f64, f64),
}

const LEAVES: &[Leaf] = &[
    Leaf {
        path: "Furniture/Living Room/Sofas",
        nouns: &["sofa", "couch", "loveseat", "sectional sofa"],
        brands: &["Nordhaus", "Casa Vera", "Loftline"],
        features: &[
            "deep seats",
            "removable covers",
            "solid oak legs",
            "reversible cushions",
        ],
        price: (300.0, 2500.0),
    },
    Leaf {
        path: "Furniture/Living Room/Coffee Tables",
        nouns: &["coffee table", "side table", "nesting tables"],
        brands: &["Nordhaus", "Loftline", "Woodwright"],
        features: &["hidden storage", "tempered glass top", "solid walnut"],
        price: (60.0, 700.0),
    },
    Leaf {
        path: "Furniture/Bedroom/Beds",
        nouns: &["bed frame", "platform bed", "bunk bed", "storage bed"],
        brands: &["Dreamwell", "Nordhaus", "Woodwright"],
        features: &["slatted base", "upholstered headboard", "under-bed drawers"],
        price: (200.0, 1800.0),
    },
    Leaf {
        path: "Furniture/Bedroom/Wardrobes",
        nouns: &["wardrobe", "armoire", "closet system"],
        brands: &["Woodwright", "Casa Vera"],
        features: &["sliding doors", "mirror panel", "soft-close hinges"],
        price: (150.0, 1500.0),
    },
    Leaf {
        path: "Furniture/Office/Desks",
        nouns: &["desk", "standing desk", "writing desk", "corner desk"],
        brands: &["Ergonia", "Loftline", "Woodwright"],
        features: &[
            "electric height adjustment",
            "cable tray",
            "scratch-resistant top",
        ],
        price: (120.0, 1200.0),
    },
    Leaf {
        path: "Furniture/Office/Office Chairs",
        nouns: &["office chair", "ergonomic chair", "task chair"],
        brands: &["Ergonia", "Sitwell"],
        features: &["lumbar support", "mesh back", "adjustable armrests"],
        price: (80.0, 900.0),
    },
    Leaf {
        path: "Electronics/Audio/Headphones",
        nouns: &[
            "headphones",
            "wireless earbuds",
            "over-ear headphones",
            "noise cancelling headphones",
        ],
        brands: &["Sonora", "Bassline", "Auralis"],
        features: &[
            "active noise cancelling",
            "30 hour battery",
            "USB-C charging",
            "foldable design",
        ],
        price: (25.0, 450.0),
    },
    Leaf {
        path: "Electronics/Audio/Speakers",
        nouns: &[
            "bluetooth speaker",
            "smart speaker",
            "soundbar",
            "bookshelf speakers",
        ],
        brands: &["Sonora", "Bassline", "Auralis"],
        features: &[
            "waterproof",
            "room-filling sound",
            "voice assistant",
            "deep bass",
        ],
        price: (30.0, 900.0),
    },
    Leaf {
        path: "Electronics/Computers/Laptops",
        nouns: &["laptop", "ultrabook", "gaming laptop", "2-in-1 laptop"],
        brands: &["Voltix", "Corewave", "Pixelon"],
        features: &[
            "16 GB RAM",
            "OLED display",
            "backlit keyboard",
            "all-day battery",
        ],
        price: (400.0, 3000.0),
    },
    Leaf {
        path: "Electronics/Computers/Monitors",
        nouns: &["monitor", "4K monitor", "curved monitor", "gaming monitor"],
        brands: &["Pixelon", "Voltix", "Clarity"],
        features: &[
            "144 Hz refresh",
            "IPS panel",
            "USB-C hub",
            "height adjustable stand",
        ],
        price: (120.0, 1400.0),
    },
    Leaf {
        path: "Electronics/Computers/Keyboards",
        nouns: &[
            "mechanical keyboard",
            "wireless keyboard",
            "gaming keyboard",
        ],
        brands: &["Keyforge", "Corewave"],
        features: &["hot-swappable switches", "RGB lighting", "low-profile keys"],
        price: (25.0, 250.0),
    },
    Leaf {
        path: "Electronics/Phones/Smartphones",
        nouns: &["smartphone", "phone", "5G phone"],
        brands: &["Pixelon", "Voltix", "Novaphone"],
        features: &[
            "triple camera",
            "120 Hz screen",
            "fast charging",
            "dual SIM",
        ],
        price: (150.0, 1400.0),
    },
    Leaf {
        path: "Electronics/Phones/Phone Cases",
        nouns: &["phone case", "wallet case", "rugged case"],
        brands: &["Shieldy", "Novaphone"],
        features: &["drop protection", "card slots", "MagSafe compatible"],
        price: (8.0, 60.0),
    },
    Leaf {
        path: "Clothing/Men/Jackets",
        nouns: &["jacket", "rain jacket", "down jacket", "bomber jacket"],
        brands: &["Northpeak", "Urbanthread", "Fjellwear"],
        features: &["water-repellent", "packable hood", "recycled insulation"],
        price: (40.0, 450.0),
    },
    Leaf {
        path: "Clothing/Men/Shirts",
        nouns: &["shirt", "oxford shirt", "flannel shirt", "linen shirt"],
        brands: &["Urbanthread", "Tailorfield"],
        features: &["slim fit", "button-down collar", "organic cotton"],
        price: (15.0, 120.0),
    },
    Leaf {
        path: "Clothing/Women/Dresses",
        nouns: &["dress", "maxi dress", "wrap dress", "summer dress"],
        brands: &["Belle Rue", "Urbanthread", "Tailorfield"],
        features: &["flowy fit", "side pockets", "breathable fabric"],
        price: (20.0, 300.0),
    },
    Leaf {
        path: "Clothing/Women/Jackets",
        nouns: &["jacket", "trench coat", "puffer jacket", "denim jacket"],
        brands: &["Belle Rue", "Northpeak", "Fjellwear"],
        features: &["water-repellent", "tailored fit", "warm lining"],
        price: (40.0, 500.0),
    },
    Leaf {
        path: "Clothing/Shoes/Sneakers",
        nouns: &["sneakers", "trainers", "canvas shoes", "high-top sneakers"],
        brands: &["Stridex", "Urbanthread"],
        features: &["cushioned sole", "breathable upper", "vegan materials"],
        price: (30.0, 220.0),
    },
    Leaf {
        path: "Kitchen/Cookware/Pans",
        nouns: &["frying pan", "skillet", "wok", "saute pan"],
        brands: &["Chefline", "Ferrocast", "Culina"],
        features: &[
            "non-stick coating",
            "induction ready",
            "oven safe",
            "cast iron",
        ],
        price: (15.0, 250.0),
    },
    Leaf {
        path: "Kitchen/Cookware/Pots",
        nouns: &["stock pot", "dutch oven", "saucepan"],
        brands: &["Ferrocast", "Culina"],
        features: &["enamelled cast iron", "glass lid", "stay-cool handles"],
        price: (20.0, 350.0),
    },
    Leaf {
        path: "Kitchen/Appliances/Coffee Machines",
        nouns: &[
            "espresso machine",
            "coffee maker",
            "bean-to-cup machine",
            "pour-over kettle",
        ],
        brands: &["Baristo", "Culina", "Brewhaus"],
        features: &["built-in grinder", "milk frother", "programmable timer"],
        price: (30.0, 1500.0),
    },
    Leaf {
        path: "Kitchen/Appliances/Blenders",
        nouns: &["blender", "smoothie blender", "hand blender"],
        brands: &["Culina", "Vortexa"],
        features: &["1200 W motor", "glass jug", "pulse mode"],
        price: (20.0, 400.0),
    },
    Leaf {
        path: "Sports/Running/Running Shoes",
        nouns: &["running shoes", "trail running shoes", "racing flats"],
        brands: &["Stridex", "Trailhawk", "Pacer"],
        features: &["carbon plate", "grippy outsole", "lightweight mesh"],
        price: (50.0, 280.0),
    },
    Leaf {
        path: "Sports/Cycling/Bikes",
        nouns: &[
            "road bike",
            "mountain bike",
            "e-bike",
            "gravel bike",
            "city bike",
        ],
        brands: &["Velocita", "Trailhawk", "Pedalia"],
        features: &[
            "hydraulic disc brakes",
            "aluminium frame",
            "12-speed drivetrain",
        ],
        price: (300.0, 5000.0),
    },
    Leaf {
        path: "Sports/Cycling/Helmets",
        nouns: &["bike helmet", "cycling helmet", "MIPS helmet"],
        brands: &["Velocita", "Pedalia"],
        features: &[
            "MIPS protection",
            "ventilation channels",
            "integrated light",
        ],
        price: (30.0, 250.0),
    },
    Leaf {
        path: "Sports/Camping/Tents",
        nouns: &["tent", "backpacking tent", "family tent", "pop-up tent"],
        brands: &["Fjellwear", "Trailhawk", "Northpeak"],
        features: &["waterproof flysheet", "quick pitch", "ultralight poles"],
        price: (40.0, 900.0),
    },
    Leaf {
        path: "Sports/Camping/Sleeping Bags",
        nouns: &["sleeping bag", "down sleeping bag", "mummy sleeping bag"],
        brands: &["Fjellwear", "Northpeak"],
        features: &["comfort rating -5 C", "compression sack", "two-way zip"],
        price: (30.0, 500.0),
    },
    Leaf {
        path: "Home/Lighting/Lamps",
        nouns: &["floor lamp", "table lamp", "desk lamp", "pendant light"],
        brands: &["Lumina", "Casa Vera"],
        features: &["dimmable LED", "brass finish", "adjustable arm"],
        price: (20.0, 400.0),
    },
    Leaf {
        path: "Home/Textiles/Rugs",
        nouns: &["rug", "area rug", "runner rug", "wool rug"],
        brands: &["Casa Vera", "Weavery"],
        features: &["hand-woven", "non-slip backing", "washable"],
        price: (30.0, 900.0),
    },
    Leaf {
        path: "Books/Fiction/Mystery",
        nouns: &["mystery novel", "detective novel", "thriller"],
        brands: &["Inkwell Press", "Harbor Books"],
        features: &["paperback", "hardcover", "bestseller"],
        price: (8.0, 35.0),
    },
    Leaf {
        path: "Books/Non-fiction/Cooking",
        nouns: &["cookbook", "baking book", "vegetarian cookbook"],
        brands: &["Inkwell Press", "Harbor Books"],
        features: &["200 recipes", "hardcover", "step-by-step photos"],
        price: (12.0, 60.0),
    },
];

/// Colours and materials give items facets that users can prefer.
pub const COLORS: &[&str] = &[
    "black", "white", "grey", "navy", "green", "red", "beige", "blue",
];
const STYLES: &[&str] = &[
    "modern",
    "classic",
    "minimalist",
    "compact",
    "premium",
    "everyday",
    "vintage",
    "sporty",
];

/// Price tiers, from the item's position in its leaf's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Budget,
    Mid,
    Premium,
}

/// Leaves whose items are bought together: after an item of the first, shoppers often
/// turn to the matching item of the second (the accessory after the main item). Content
/// similarity cannot find these (other category, other words); co-visitation can.
const COMPANION_LEAVES: &[(&str, &str)] = &[
    (
        "Furniture/Living Room/Sofas",
        "Furniture/Living Room/Coffee Tables",
    ),
    ("Furniture/Living Room/Coffee Tables", "Home/Textiles/Rugs"),
    ("Furniture/Bedroom/Beds", "Home/Lighting/Lamps"),
    ("Furniture/Office/Desks", "Furniture/Office/Office Chairs"),
    (
        "Electronics/Computers/Laptops",
        "Electronics/Computers/Monitors",
    ),
    (
        "Electronics/Computers/Monitors",
        "Electronics/Computers/Keyboards",
    ),
    (
        "Electronics/Phones/Smartphones",
        "Electronics/Phones/Phone Cases",
    ),
    ("Electronics/Audio/Speakers", "Electronics/Audio/Headphones"),
    ("Clothing/Men/Jackets", "Clothing/Men/Shirts"),
    ("Clothing/Women/Dresses", "Clothing/Shoes/Sneakers"),
    ("Kitchen/Cookware/Pans", "Kitchen/Cookware/Pots"),
    (
        "Kitchen/Appliances/Coffee Machines",
        "Kitchen/Appliances/Blenders",
    ),
    ("Sports/Cycling/Bikes", "Sports/Cycling/Helmets"),
    ("Sports/Camping/Tents", "Sports/Camping/Sleeping Bags"),
    ("Books/Non-fiction/Cooking", "Kitchen/Cookware/Pans"),
];

/// What the simulation knows about an item beyond its record (its hidden facets).
#[derive(Clone, Debug)]
pub struct Product {
    pub item: Item,
    pub leaf: usize,
    pub color: usize,
    pub tier: Tier,
}

/// The language of the shop's titles, descriptions, categories and shoppers' queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Chinese (simplified): the same products, word for word (brands stay in Latin letters).
    Zh,
}

/// One leaf's words in a language.
struct Words {
    path: &'static str,
    nouns: &'static [&'static str],
    features: &'static [&'static str],
    colors: &'static [&'static str],
    styles: &'static [&'static str],
}

impl Words {
    fn of(language: Language, leaf: usize) -> Self {
        match language {
            Language::En => Self {
                path: LEAVES[leaf].path,
                nouns: LEAVES[leaf].nouns,
                features: LEAVES[leaf].features,
                colors: COLORS,
                styles: STYLES,
            },
            Language::Zh => {
                let (path, nouns, features) = super::zh::LEAVES[leaf];
                Self {
                    path,
                    nouns,
                    features,
                    colors: super::zh::COLORS,
                    styles: super::zh::STYLES,
                }
            }
        }
    }
}

/// The whole generated shop.
#[derive(Debug)]
pub struct Shop {
    pub products: Vec<Product>,
    pub language: Language,
}

impl Shop {
    /// `n` products spread over every leaf category, deterministic in `seed`, in English.
    pub fn generate(n: usize, seed: u64) -> Self {
        Self::generate_in(Language::En, n, seed)
    }

    /// [`Shop::generate`] in `language`: the same seed gives the same products (ids, leaves,
    /// colours, prices) in every language, their words translated.
    pub fn generate_in(language: Language, n: usize, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let now = OffsetDateTime::now_utc();
        let products = (0..n)
            .map(|i| {
                let leaf_ix = i % LEAVES.len();
                let leaf = &LEAVES[leaf_ix];
                let words = Words::of(language, leaf_ix);
                let color = rng.random_range(0..COLORS.len());
                let noun = words.nouns[rng.random_range(0..leaf.nouns.len())];
                let brand = leaf.brands[rng.random_range(0..leaf.brands.len())];
                let style = words.styles[rng.random_range(0..STYLES.len())];
                let f1 = words.features[rng.random_range(0..leaf.features.len())];
                let f2 = words.features[rng.random_range(0..leaf.features.len())];
                let colour = words.colors[color];
                let position: f64 = rng.random::<f64>();
                let (lo, hi) = leaf.price;
                // Log-uniform within the leaf's range.
                let price = (lo.ln() + position * (hi.ln() - lo.ln())).exp();
                let price = (price * 100.0).round() / 100.0 - 0.01;
                let tier = match position {
                    p if p < 0.33 => Tier::Budget,
                    p if p < 0.67 => Tier::Mid,
                    _ => Tier::Premium,
                };
                let model = format!(
                    "{}{}",
                    (b'A' + rng.random_range(0..26u8)) as char,
                    rng.random_range(100..999)
                );
                let (title, description) = match language {
                    Language::En => (
                        format!("{brand} {style} {colour} {noun} {model}"),
                        format!(
                            "A {style} {colour} {noun} by {brand} with {f1}{}.",
                            if f1 == f2 {
                                String::new()
                            } else {
                                format!(" and {f2}")
                            }
                        ),
                    ),
                    Language::Zh => (
                        format!("{brand} {style}{colour}{noun} {model}"),
                        format!(
                            "{brand}出品的{style}{colour}{noun}，{f1}{}。",
                            if f1 == f2 {
                                String::new()
                            } else {
                                format!("，{f2}")
                            }
                        ),
                    ),
                };
                let age_days = rng.random_range(0..720);
                let item = Item {
                    id: ItemId::from(format!("sku-{i:06}")),
                    title,
                    description: Some(description),
                    category: Some(words.path.to_string()),
                    brand: Some(brand.to_string()),
                    price: Some(price.max(0.99)),
                    tags: vec![colour.to_string(), style.to_string()],
                    in_stock: Some(rng.random::<f64>() > 0.08),
                    attributes: serde_json::Map::new(),
                    updated_at: Some(now - time::Duration::days(age_days)),
                };
                Product {
                    item,
                    leaf: leaf_ix,
                    color,
                    tier,
                }
            })
            .collect();
        Self { products, language }
    }

    /// The item bought together with product `i`, if its leaf has a companion leaf: the
    /// product of the same rank within that leaf (each leaf holds every `leaves()`-th
    /// product).
    pub fn companion(&self, i: usize) -> Option<usize> {
        let leaf = LEAVES[self.products.get(i)?.leaf].path;
        let (_, other) = COMPANION_LEAVES.iter().find(|(from, _)| *from == leaf)?;
        let other = LEAVES.iter().position(|l| l.path == *other)?;
        let n = LEAVES.len();
        let in_other = (self.products.len() + n - 1 - other) / n;
        (in_other > 0).then(|| other + n * ((i / n) % in_other))
    }

    /// Number of leaf categories.
    pub fn leaves() -> usize {
        LEAVES.len()
    }

    /// The category path of leaf `i`.
    pub fn leaf_path(i: usize) -> &'static str {
        LEAVES[i].path
    }

    /// A query a shopper looking in leaf `i` might type (a product noun, sometimes with a
    /// colour), in English.
    pub fn query_for(leaf: usize, color: Option<usize>, rng: &mut impl Rng) -> String {
        Self::query_in(Language::En, leaf, color, rng)
    }

    /// [`Shop::query_for`] in `language`; the same random draws give a query and its
    /// translation.
    pub fn query_in(
        language: Language,
        leaf: usize,
        color: Option<usize>,
        rng: &mut impl Rng,
    ) -> String {
        let words = Words::of(language, leaf);
        let noun = words.nouns[rng.random_range(0..LEAVES[leaf].nouns.len())];
        match (color, language) {
            (Some(c), Language::En) => format!("{} {noun}", words.colors[c]),
            (Some(c), Language::Zh) => format!("{}{noun}", words.colors[c]),
            (None, _) => noun.to_string(),
        }
    }

    /// A broad query for the area of leaf `i`: its parent and top categories
    /// (`Furniture/Living Room/Sofas` -> `living room furniture`), matching several leaves.
    pub fn broad_query_for(leaf: usize) -> String {
        Self::broad_query_in(Language::En, leaf)
    }

    /// [`Shop::broad_query_for`] in `language` (Chinese: `客厅家具`).
    pub fn broad_query_in(language: Language, leaf: usize) -> String {
        let parts: Vec<&str> = Words::of(language, leaf).path.split('/').collect();
        let parent = parts
            .get(parts.len().saturating_sub(2))
            .copied()
            .unwrap_or_default();
        match language {
            Language::En => format!("{} {}", parent, parts[0]).to_lowercase(),
            Language::Zh => format!("{parent}{}", parts[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chinese_shop_is_the_english_one_translated() {
        for (leaf, (path, nouns, features)) in super::super::zh::LEAVES.iter().enumerate() {
            assert_eq!(
                path.split('/').count(),
                LEAVES[leaf].path.split('/').count(),
                "{path}"
            );
            assert_eq!(nouns.len(), LEAVES[leaf].nouns.len(), "{path}");
            assert_eq!(features.len(), LEAVES[leaf].features.len(), "{path}");
        }
        assert_eq!(super::super::zh::LEAVES.len(), LEAVES.len());
        assert_eq!(super::super::zh::COLORS.len(), COLORS.len());
        assert_eq!(super::super::zh::STYLES.len(), STYLES.len());
        let en = Shop::generate_in(Language::En, 200, 4);
        let zh = Shop::generate_in(Language::Zh, 200, 4);
        for (e, z) in en.products.iter().zip(&zh.products) {
            assert_eq!(
                (&e.item.id, e.leaf, e.color, e.item.price),
                (&z.item.id, z.leaf, z.color, z.item.price)
            );
            assert_eq!(e.item.brand, z.item.brand);
            let han = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
            assert!(z.item.title.chars().any(han), "{}", z.item.title);
        }
        for seed in 0..20 {
            let en = Shop::query_in(Language::En, 0, Some(2), &mut SmallRng::seed_from_u64(seed));
            let zh = Shop::query_in(Language::Zh, 0, Some(2), &mut SmallRng::seed_from_u64(seed));
            let en_noun = LEAVES[0]
                .nouns
                .iter()
                .position(|n| en == format!("grey {n}"));
            let zh_noun = super::super::zh::LEAVES[0]
                .1
                .iter()
                .position(|n| zh == format!("灰色{n}"));
            assert!(en_noun.is_some() && en_noun == zh_noun, "{en} / {zh}");
        }
        assert_eq!(Shop::broad_query_in(Language::Zh, 0), "客厅家具");
    }

    #[test]
    fn the_shop_is_deterministic_valid_and_covers_every_leaf() {
        let a = Shop::generate(500, 7);
        let b = Shop::generate(500, 7);
        assert_eq!(a.products.len(), 500);
        for (x, y) in a.products.iter().zip(&b.products) {
            assert_eq!(x.item.title, y.item.title);
            assert_eq!(x.item.price, y.item.price);
            x.item.validate().unwrap();
        }
        let leaves: std::collections::HashSet<usize> = a.products.iter().map(|p| p.leaf).collect();
        assert_eq!(leaves.len(), Shop::leaves());
        let ids: std::collections::HashSet<&str> =
            a.products.iter().map(|p| p.item.id.as_str()).collect();
        assert_eq!(ids.len(), 500);
    }

    #[test]
    fn companions_are_in_the_companion_leaf_and_spread_over_it() {
        let shop = Shop::generate(1_240, 7);
        let mut targets = std::collections::HashSet::new();
        let mut with = 0;
        for (i, p) in shop.products.iter().enumerate() {
            let Some(c) = shop.companion(i) else {
                continue;
            };
            with += 1;
            let from = Shop::leaf_path(p.leaf);
            let to = Shop::leaf_path(shop.products[c].leaf);
            assert!(COMPANION_LEAVES.contains(&(from, to)), "{from} -> {to}");
            targets.insert(c);
        }
        assert_eq!(with, 1_240 / Shop::leaves() * COMPANION_LEAVES.len());
        assert!(targets.len() * 2 > with, "companions pile up on few items");
        assert_eq!(shop.companion(5_000), None);
    }
}
