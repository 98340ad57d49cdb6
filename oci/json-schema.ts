import { Ajv, type Options, type ValidateFunction } from 'ajv';

/**
 * A validator for one of our schemas, compiled on its first use by an Ajv that does not check the
 * schema against the JSON Schema meta-schema: that check compiles the meta-schema itself, and every
 * validator compiled at load time made each start of the site executable ~120 ms slower, whatever
 * the command. test/unit/schemas.test.ts checks our schemas against the meta-schema instead.
 */
export function lazyValidator<T>(schema: object, options: Options = {}): ValidateFunction<T> {
  let compiled: ValidateFunction<T> | undefined;
  const validate = ((data: unknown) => {
    compiled ??= new Ajv({ ...options, validateSchema: false }).compile<T>(schema);
    const ok = compiled(data);
    validate.errors = compiled.errors;
    return ok;
  }) as ValidateFunction<T>;
  return validate;
}
