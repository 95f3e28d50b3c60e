//! `date_bin`, DataFusion's own, hashed by its name.
//!
//! DataFusion hashes a function call with its function, and a function with its signature.
//! `date_bin` accepts some sixty combinations of interval, timestamp unit and time zone, so
//! every hash of a call walks about two hundred data types and their time zone strings, and
//! planning hashes a query's expressions many times over (grouping sets, equivalence classes,
//! common subexpressions): 4 % of single-groupby's CPU went to hashing `date_bin`'s signature.
//! [`DateBin`] is registered in its place; it behaves exactly as DataFusion's, whose methods
//! it forwards, and hashes and compares as the one function it is.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::functions::datetime::date_bin::DateBinFunc;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// Puts [`DateBin`] in `state` in place of DataFusion's `date_bin`.
pub(crate) fn register(state: &mut SessionState) -> Result<()> {
    state.register_udf(Arc::new(ScalarUDF::new_from_impl(DateBin::default())))?;
    Ok(())
}

/// DataFusion's `date_bin` (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct DateBin(DateBinFunc);

impl PartialEq for DateBin {
    fn eq(&self, _: &Self) -> bool {
        true // every instance is the same function
    }
}

impl Eq for DateBin {}

impl Hash for DateBin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

// The methods `DateBinFunc` implements, forwarded; the rest are the trait's defaults for both.
impl ScalarUDFImpl for DateBin {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.0.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.0.invoke_with_args(args)
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.0.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn hashes_and_compares_as_one_function_named_date_bin() {
        let (a, b) = (
            ScalarUDF::new_from_impl(DateBin::default()),
            ScalarUDF::new_from_impl(DateBin::default()),
        );
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(a, b);
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
        assert_eq!(a.name(), "date_bin");
        assert_eq!(
            a.signature(),
            ScalarUDF::new_from_impl(DateBinFunc::new()).signature()
        );
    }

    #[test]
    fn keeps_the_order_of_the_times_it_bins() {
        // What lets DataFusion know `ORDER BY date_bin(..., time)` follows `time`'s order.
        let ordered = SortProperties::Ordered(Default::default());
        let inputs = [
            ExprProperties::new_unknown().with_order(SortProperties::Singleton),
            ExprProperties::new_unknown().with_order(ordered),
        ];
        assert_eq!(
            DateBin::default().output_ordering(&inputs).unwrap(),
            ordered
        );
        assert_eq!(
            DateBin::default()
                .return_type(&[
                    DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                    DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
                ])
                .unwrap(),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None)
        );
    }
}
