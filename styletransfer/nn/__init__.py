"""Networks and tensor maths shared by the methods: the VGG-19 encoder by layer name, safe weight loading,
feature statistics (mean/std, Gram, the matrix square root) and colour transforms."""
