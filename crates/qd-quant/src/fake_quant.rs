pub struct FakeQuant;
